"""mar_builder.export / mar_builder.build: the notebook API takes the objects themselves, with the CLI's checks."""

import subprocess
import sys
import zipfile

import pytest
import torch
import torchvision.transforms as T
from conftest import TinyCNN, class_names

import mar_builder
from mar_builder.errors import ClassNamesError, ModelSourceError, RecipeError, SettingsError
from mar_builder.model.recipe import Recipe

TESTVAL_TRANSFORMS = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])


def test_import_mar_builder_stays_cheap():
    code = "import sys, mar_builder; assert callable(mar_builder.export); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_export_takes_the_model_and_its_eval_transform(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN(3).train()  # a notebook's model, still in training mode
    path = mar_builder.export(model, ["a", "b", "c"], transforms=TESTVAL_TRANSFORMS, output=tmp_path / "x.pt")
    assert model.training  # the user's model is left as it was
    pt = torch.jit.load(str(path))
    assert list(pt.class_names) == ["a", "b", "c"] and (pt.resize, list(pt.mean)) == ([256], [0.5] * 3)
    image = torch.randint(0, 256, (1, 3, 240, 320), dtype=torch.uint8)
    pil = T.ToPILImage()(image[0])
    with torch.no_grad():
        expected = model.eval()(TESTVAL_TRANSFORMS(pil).unsqueeze(0)).softmax(1)
    torch.testing.assert_close(pt(image), expected, atol=2e-3, rtol=0)


def test_export_with_a_recipe_and_a_one_logit_head(tmp_path):
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1))
    network(torch.zeros(1, 1, 32, 32))
    recipe = Recipe(resize=(32, 32), crop=None, grayscale=1, mean=(0.5,), std=(0.5,))
    path = mar_builder.export(network, ["defect"], recipe=recipe, output=tmp_path / "one.pt")
    pt = torch.jit.load(str(path))
    assert pt.head == "sigmoid" and list(pt.input_size) == [1, 32, 32]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"model": "resnet50"}, ModelSourceError, r"model must be a torch nn.Module, got a str"),
        ({"class_names": ["a", "a", "b"]}, ClassNamesError, r"duplicated class names: 'a'"),
        ({"transforms": T.Compose([T.RandomCrop(224), T.ToTensor()])}, RecipeError, r"RandomCrop is a random"),
        ({"transforms": TESTVAL_TRANSFORMS, "recipe": Recipe()}, SettingsError, r"give transforms or recipe"),
        ({"head": "softmax", "class_names": ["a", "b"]}, ModelSourceError, r"outputs 3 classes but 2 class names"),
    ],
)
def test_export_runs_the_command_lines_checks(tmp_path, kwargs, error, message):
    arguments = {"model": TinyCNN(3), "class_names": ["a", "b", "c"], "output": tmp_path / "x.pt", **kwargs}
    with pytest.raises(error, match=message):
        mar_builder.export(**arguments)
    assert not (tmp_path / "x.pt").exists()


def test_build_packs_the_archive(tmp_path):
    torch.manual_seed(0)
    mar = mar_builder.build(
        TinyCNN(4),
        class_names(4),
        transforms=TESTVAL_TRANSFORMS,
        name="notebook",
        model_store=tmp_path,
        head="sigmoid",
    )
    assert mar == tmp_path / "notebook.mar"
    with zipfile.ZipFile(mar) as archive:
        names = archive.namelist()
    assert "notebook.pt" in names and "classifier_handler.py" in names
    with pytest.raises(SettingsError, match=r"--name 'no name'"):
        mar_builder.build(TinyCNN(4), class_names(4), name="no name", model_store=tmp_path)
