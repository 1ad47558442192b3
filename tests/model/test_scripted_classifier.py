"""--pt with a TorchScript classifier this tool did not export (the tutorial's Predictor): checked, wrapped, rebuilt."""

import zipfile

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from classifier_handler import ClassifierHandler
from conftest import TinyCNN, class_names
from fake_context import FakeContext
from image_decoding import decode_image
from image_variants import encode, sample
from torch import nn
from tutorial_predictor import LANDMARKS, SmallCNN, save_tutorial_pt
from user_model_files import run

from mar_builder.constants import FULL_DECODE_RESIZE_SIZE
from mar_builder.errors import ModelSourceError
from mar_builder.model.model_sources import check_exported_pt
from mar_builder.model.rebuild import REBUILD_TOLERANCE, rebuild_predictor
from mar_builder.model.scripted_classifier import to_tensor

# Large enough that the handler's default JPEG draft (short side >= 4 x 256) would decode it at half scale.
LARGE_JPEG = encode(sample("chelsea.png").resize((3200, 2128)), "JPEG", quality=90)
SMALL_PNG = encode(sample("coffee.png").resize((40, 30)), "PNG")


@pytest.fixture
def tutorial_pt(tmp_path):
    return save_tutorial_pt(tmp_path / "standalone_model.pt")


def tutorial_call(pt, image: torch.Tensor) -> torch.Tensor:
    """The tutorial's own call on a decoded uint8 image: m(T.ToTensor()(img).unsqueeze(0))."""
    return torch.jit.load(str(pt))(to_tensor(image))[0]


class LogitsOnly(nn.Module):
    def __init__(self, names) -> None:
        super().__init__()
        self.model = TinyCNN(len(names))
        self.class_names = list(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.interpolate(x, size=[64, 64]))


class Softmaxed(LogitsOnly):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(F.interpolate(x, size=[64, 64])), dim=1)


class Unnamed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(x.mean((2, 3)), dim=1)


@pytest.mark.parametrize("scripted_model", [True, False], ids=["scripted network", "traced network"])
def test_the_tutorials_pt_is_accepted_and_gives_its_class_names(tmp_path, scripted_model):
    path = save_tutorial_pt(tmp_path / "standalone_model.pt", scripted_model=scripted_model)
    assert check_exported_pt(path) == LANDMARKS


def test_export_wraps_it_and_the_wrapped_pt_answers_as_the_tutorials_call(tutorial_pt, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="mar_builder")
    code, err = run(["export", "--output", tmp_path / "wrapped.pt", "--pt", tutorial_pt], capsys)
    assert code == 0, err
    assert "served through its own forward, one image at a time" in caplog.text
    assert "(--rebuild exports it as this tool's Predictor, batched)" in caplog.text
    assert "reloads on its own and answers as the module's forward does" in caplog.text
    assert "serving 5 classes, in output order: 0: Eiffel Tower, 1: Golden Gate Bridge" in caplog.text
    wrapped = torch.jit.load(str(tmp_path / "wrapped.pt"))
    assert list(wrapped.class_names) == LANDMARKS and wrapped.resize_size == FULL_DECODE_RESIZE_SIZE
    image = decode_image(encode(sample("rocket.jpg"), "PNG"))
    row = wrapped.classify(wrapped.preprocess(image).unsqueeze(0))[0]
    torch.testing.assert_close(row, tutorial_call(tutorial_pt, image), atol=1e-6, rtol=0)


def make_handler(pt):
    context = FakeContext(pt.parent, pt.name, {"minWorkers": 2, "handler": {"topk": 5}})
    handler = ClassifierHandler()
    handler.initialize(context)  # frozen and with its default JPEG draft factor, as served
    return handler, context


def test_handler_serves_a_mixed_batch_with_full_decodes_and_a_bad_input_fails_alone(tutorial_pt, tmp_path, capsys):
    assert run(["export", "--output", tmp_path / "wrapped.pt", "--pt", tutorial_pt], capsys)[0] == 0
    handler, context = make_handler(tmp_path / "wrapped.pt")
    data = [{"body": bytearray(LARGE_JPEG)}, {"body": bytearray(b"not an image")}, {"data": bytearray(SMALL_PNG)}]
    answers = handler.handle(data, context.with_requests([{}] * 3))
    assert set(context.statuses) == {1} and context.statuses[1][0] == 400
    for answer, body in ((answers[0], LARGE_JPEG), (answers[2], SMALL_PNG)):
        expected = tutorial_call(tutorial_pt, decode_image(body))  # a full decode, no draft
        assert list(answer) == [LANDMARKS[i] for i in expected.argsort(descending=True).tolist()]
        for label, p in answer.items():
            assert p == pytest.approx(float(expected[LANDMARKS.index(label)]), abs=1e-5), label


def gpu_saved(path, tmp_path):
    """`path` as saved from a CUDA device: every storage's location rewritten to cuda:0."""
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    out = tmp_path / "gpu_model.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data.replace(cpu, cuda) if info.filename.endswith(".pkl") else data)
    assert b"cuda:0" in zipfile.ZipFile(out).read(f"{zipfile.ZipFile(out).namelist()[0].split('/')[0]}/data.pkl")
    return out


def test_a_pt_saved_on_a_gpu_loads_on_the_cpu(tutorial_pt, tmp_path, capsys):
    path = gpu_saved(tutorial_pt, tmp_path)
    if not torch.cuda.is_available():  # without map_location this very file cannot be loaded here
        with pytest.raises(RuntimeError, match="(?i)nvidia|cuda"):
            torch.jit.load(str(path))
    assert run(["export", "--output", tmp_path / "wrapped.pt", "--pt", path], capsys)[0] == 0
    image = decode_image(SMALL_PNG)
    wrapped = torch.jit.load(str(tmp_path / "wrapped.pt"))
    torch.testing.assert_close(wrapped.preprocess(image), tutorial_call(tutorial_pt, image), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "module, message",
    [
        (LogitsOnly(class_names(3)), r"forward returns logits, not probabilities .* end forward with F.softmax"),
        (Unnamed(), r"has no class_names: give the scripted module a `class_names` attribute"),
        (Softmaxed(class_names(4)), None),
    ],
    ids=["logits", "no class_names", "fine"],
)
def test_scripted_classifiers_that_cannot_be_served_are_refused(tmp_path, module, message):
    path = tmp_path / "m.pt"
    torch.jit.script(module).save(str(path))
    if message is None:
        assert check_exported_pt(path) == class_names(4)
        return
    with pytest.raises(ModelSourceError, match=message):
        check_exported_pt(path)


def test_output_width_must_equal_the_class_names(tmp_path):
    path = save_tutorial_pt(tmp_path / "m.pt", model=SmallCNN(4), class_names=LANDMARKS)
    with pytest.raises(ModelSourceError, match=r"answers shape \[1, 4\] for 1 image\(s\) of .*, but has 5 class names"):
        check_exported_pt(path)


def test_rebuild_exports_our_predictor_with_the_tutorials_parameters(tutorial_pt, tmp_path, capsys):
    code, err = run(["export", "--output", tmp_path / "rebuilt.pt", "--pt", tutorial_pt, "--rebuild"], capsys)
    assert code == 0, err
    rebuilt = torch.jit.load(str(tmp_path / "rebuilt.pt"))
    assert (rebuilt.resize, rebuilt.crop, rebuilt.interpolation) == ([256], [224, 224], "bilinear")
    assert list(rebuilt.mean) == [0.5] * 3 and list(rebuilt.std) == [0.5] * 3
    assert list(rebuilt.class_names) == LANDMARKS
    image = decode_image(encode(sample("rocket.jpg"), "PNG"))
    expected = tutorial_call(tutorial_pt, image)
    # On the tutorial's float input both resize as torchvision does; served, uint8 pixels are resized
    # as uint8 (within one grey level), which moves the probabilities a little.
    torch.testing.assert_close(rebuilt(to_tensor(image))[0], expected, atol=REBUILD_TOLERANCE, rtol=0)
    served = rebuilt.classify(rebuilt.preprocess(image).unsqueeze(0))[0]
    assert served.argmax() == expected.argmax() and float((served - expected).abs().max()) < 0.01


class OtherTransforms(nn.Module):
    """Tutorial-like, but its Resize sets both sides (a squash)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = TinyCNN(3)
        self.class_names = class_names(3)
        self.transforms = nn.Sequential(
            T.Resize([64, 80]), T.CenterCrop(64), T.ConvertImageDtype(torch.float), T.Normalize([0.5] * 3, [0.5] * 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(self.transforms(x)), dim=1)


class ExtraStep(OtherTransforms):
    """Tutorial-like transforms, but forward does more than them: the comparison must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.transforms[0] = T.Resize([64])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(2 * self.model(self.transforms(x).flip(-1)), dim=1)


@pytest.mark.parametrize(
    "module, message",
    [
        (Softmaxed(class_names(3)), r"has no `model` and `transforms` submodules .* drop --rebuild"),
        (ExtraStep(), r"differ from .* own by up to .*: its forward does more than the tutorial's; drop --rebuild"),
    ],
    ids=["no transforms", "forward does more"],
)
def test_rebuild_is_refused_when_the_parameters_cannot_be_read(tmp_path, module, message):
    path = tmp_path / "m.pt"
    torch.jit.script(module).save(str(path))
    loaded = torch.jit.load(str(path))
    with pytest.raises(ModelSourceError, match=message):
        rebuild_predictor(loaded, check_exported_pt(path), path)


def test_rebuild_needs_pt_and_a_foreign_module(tiny_pt, tmp_path, capsys):
    code, err = run(["export", "--output", tmp_path / "m.pt", "--rebuild"], capsys)
    assert code == 1 and "--rebuild reads a scripted Predictor: it goes with --pt FILE.pt" in err
    code, err = run(["export", "--output", tmp_path / "m.pt", "--pt", tiny_pt, "--rebuild"], capsys)
    assert code == 1 and "is already a Predictor exported by this tool; drop --rebuild" in err


def test_a_traced_classifier_gets_its_class_names_from_classes(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="mar_builder")
    # torch.jit.trace keeps no list attributes: a traced module can't carry class_names itself.
    traced = torch.jit.trace(Softmaxed(class_names(4)).eval(), torch.rand(1, 3, 64, 64))
    traced.save(str(tmp_path / "traced.pt"))
    (tmp_path / "classes.txt").write_text("\n".join(class_names(4)) + "\n")
    code, err = run(["export", "--output", tmp_path / "w.pt", "--pt", tmp_path / "traced.pt"], capsys)
    assert code == 1 and "has no class_names" in err and "or pass --classes FILE" in err
    argv = [
        "export",
        "--output",
        tmp_path / "w.pt",
        "--pt",
        tmp_path / "traced.pt",
        "--classes",
        tmp_path / "classes.txt",
    ]
    code, err = run(argv, capsys)
    assert code == 0, err
    assert "--rebuild" not in caplog.text  # no model and transforms to read: not suggested
    wrapped = torch.jit.load(str(tmp_path / "w.pt"))
    assert list(wrapped.class_names) == class_names(4)
    image = decode_image(encode(sample("rocket.jpg"), "PNG"))
    torch.testing.assert_close(wrapped.preprocess(image), traced(to_tensor(image))[0], atol=1e-6, rtol=0)


def test_classes_may_not_contradict_a_modules_own_or_rename_our_predictor(tutorial_pt, tiny_pt, tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("\n".join(class_names(5)) + "\n")
    code, err = run(
        ["export", "--output", tmp_path / "w.pt", "--pt", tutorial_pt, "--classes", tmp_path / "classes.txt"], capsys
    )
    assert code == 1 and "has class_names of its own, which differ from those given: drop --classes" in err
    code, err = run(
        ["export", "--output", tmp_path / "w.pt", "--pt", tiny_pt, "--classes", tmp_path / "classes.txt"], capsys
    )
    assert code == 1 and "with class names of its own; drop --classes" in err


def test_rebuild_reads_a_squash_into_the_recipe(tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.script(OtherTransforms()).save(str(path))
    loaded = torch.jit.load(str(path))
    rebuilt = rebuild_predictor(loaded, check_exported_pt(path), path)
    assert rebuilt.recipe.resize == (64, 80) and rebuilt.recipe.crop == (64, 64)
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    torch.testing.assert_close(rebuilt(image.unsqueeze(0).float() / 255), loaded(image.unsqueeze(0).float() / 255))
