"""export with the model's own recipe: --arch's torchvision weights, --transforms, googlenet fine-tuned; bad input."""

import logging

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from user_model_files import run

from mar_builder.constants import REPO_ROOT
from mar_builder.model.transform_check import compare_on_photos

TESTVAL_PY = """
import torchvision.transforms as T

testval_transforms = T.Compose(
    [
        T.Resize(256),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ]
)
train_transforms = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
not_a_transform = "resize 256"


def make_eval_transforms():
    return testval_transforms
"""
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PHOTOS = sorted((REPO_ROOT / "samples").glob("*.*g"))


def uint8_photo(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "transforms.py").write_text(TESTVAL_PY)
    (tmp_path / "broken.py").write_text("import torchvision.transforms as T\nraise RuntimeError('typo')\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\n")
    return tmp_path


def save_checkpoint(network: torch.nn.Module, path) -> None:
    torch.save(network.state_dict(), path)


def test_arch_resnet50_takes_torchvisions_recipe(user_files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    torch.manual_seed(0)
    save_checkpoint(torchvision.models.resnet50(num_classes=3), user_files / "r50.pt")
    out = user_files / "r50-export.pt"
    flags = ["--arch", "resnet50", "--weights", user_files / "r50.pt", "--classes", user_files / "classes.txt"]
    code, err = run(["export", "--output", out, *flags], capsys)
    assert code == 0, err
    pt = torch.jit.load(str(out))
    assert (pt.resize, pt.crop, pt.interpolation) == ([232], [224, 224], "bilinear")
    assert "resize: torchvision's resnet50 weights" in caplog.text
    preset = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    for photo in PHOTOS:
        expected = preset(Image.open(photo).convert("RGB"))
        assert float((pt.preprocess(uint8_photo(photo)) - expected).abs().mean()) <= 0.0013


def test_googlenet_fine_tuned_from_torchvisions_weights_serves_its_eager_answers(user_files, capsys):
    # googlenet(weights=DEFAULT) then a new fc, the usual fine-tuning: no auxiliary heads, transform_input=True.
    torch.manual_seed(0)
    fine_tuned = torchvision.models.GoogLeNet(aux_logits=False, transform_input=True, init_weights=False)
    fine_tuned.fc = torch.nn.Linear(1024, 3)
    save_checkpoint(fine_tuned, user_files / "googlenet.pt")
    out = user_files / "g.pt"
    flags = ["--arch", "googlenet", "--weights", user_files / "googlenet.pt", "--classes", user_files / "classes.txt"]
    small = ["--resize", "80", "--crop", "64"]  # flags replace the weights' 256/224: keeps the test fast
    code, err = run(["export", "--output", out, *flags, *small], capsys)
    assert code == 0, err
    pt = torch.jit.load(str(out))
    assert list(pt.mean) == [0.485, 0.456, 0.406]  # the rest of the weights' recipe
    reference = T.Compose([T.Resize(80), T.CenterCrop(64), T.ToTensor(), T.Normalize(*IMAGENET)])
    fine_tuned.eval()
    for photo in PHOTOS:
        with torch.no_grad():
            expected = fine_tuned(reference(Image.open(photo).convert("RGB")).unsqueeze(0)).softmax(1)
        torch.testing.assert_close(pt(uint8_photo(photo).unsqueeze(0)), expected, atol=2e-3, rtol=0)


def test_a_function_returning_the_transform_is_called(user_files):
    from mar_builder.model.transform_check import load_transform

    transform = load_transform(f"{user_files / 'transforms.py'}:make_eval_transforms")
    assert [type(step).__name__ for step in transform.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]


def test_transforms_flag_compiles_the_tutorials_testval_transforms(user_files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    torch.manual_seed(0)
    save_checkpoint(torchvision.models.squeezenet1_1(num_classes=3), user_files / "sq.pt")
    out = user_files / "sq-export.pt"
    flags = ["--arch", "squeezenet1_1", "--weights", user_files / "sq.pt", "--classes", user_files / "classes.txt"]
    code, err = run(
        ["export", "--output", out, *flags, "--transforms", f"{user_files / 'transforms.py'}:testval_transforms"],
        capsys,
    )
    assert code == 0, err
    pt = torch.jit.load(str(out))
    assert (pt.resize, pt.crop, list(pt.mean), list(pt.std)) == ([256], [224, 224], [0.5] * 3, [0.5] * 3)
    assert "--transforms against the compiled recipe on 3 photos: largest difference" in caplog.text
    from importlib import util

    spec = util.spec_from_file_location("user_transforms", user_files / "transforms.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = compare_on_photos(module.testval_transforms, pt_recipe_of(pt), PHOTOS)
    assert result.mean <= 0.0013


def pt_recipe_of(pt):
    from mar_builder.validation.in_process import pt_recipe

    return pt_recipe(pt)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--transforms", "{dir}/broken.py:testval_transforms"], r"importing .*broken.py failed: RuntimeError: typo"),
        (["--transforms", "{dir}/transforms.py:eval_tf"], r"defines no 'eval_tf'; transforms it defines: .*testval"),
        (["--transforms", "{dir}/transforms.py:not_a_transform"], r"--transforms not_a_transform is a str, not a"),
        (["--transforms", "{dir}/transforms.py:train_transforms"], r"RandomResizedCrop is a random augmentation"),
        (
            ["--transforms", "{dir}/transforms.py:testval_transforms", "--resize", "232", "--crop", "224"],
            r"--transforms contradicts --resize \(232 against the transform's 256\)",
        ),
        (["--check-photos", "{dir}"], r"--check-photos checks a --transforms recipe"),
        (["--head", "softmax", "--no-weights-recipe", "--classes", "{dir}/one.txt"], r"a softmax over one value"),
    ],
)
def test_bad_recipes_exit_1_with_one_line_and_write_nothing(user_files, capsys, extra, message):
    torch.manual_seed(0)
    network = torchvision.models.squeezenet1_1(num_classes=1 if "{dir}/one.txt" in extra else 3)
    save_checkpoint(network, user_files / "sq.pt")
    (user_files / "one.txt").write_text("defect\n")
    out = user_files / "never.pt"
    classes = [] if "--classes" in extra else ["--classes", user_files / "classes.txt"]
    flags = ["--arch", "squeezenet1_1", "--weights", user_files / "sq.pt", *classes]
    code, err = run(["export", "--output", out, *flags, *[e.format(dir=user_files) for e in extra]], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert not out.exists()
