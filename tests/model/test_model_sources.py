import textwrap

import pytest
import torch
from conftest import TinyCNN, class_names
from torch import nn

from mar_builder.errors import ClassNamesError, ModelSourceError
from mar_builder.model.export import script_predictor
from mar_builder.model.model_sources import (
    build_architecture,
    build_from_model_file,
    check_exported_pt,
    classification_architectures,
    parse_model_kwargs,
)
from mar_builder.model.predictor import Predictor

NET_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=4)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def make_net(classes: int) -> nn.Module:
    return Net(num_classes=classes)


NOT_A_MODEL = 42


def not_a_module():
    return "a string"


if __name__ == "__main__":
    raise SystemExit("this is the training script's main: importing must not run it")
"""


def write_module(directory, name: str, source: str):
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def test_architectures_are_the_classification_ones():
    names = classification_architectures()
    assert {"resnet18", "mobilenet_v3_small", "vit_b_16", "convnext_tiny"} <= set(names)
    assert not {"fasterrcnn_resnet50_fpn", "fcn_resnet50", "r3d_18", "raft_small", "quantized_resnet18"} & set(names)


def test_architecture_is_built_untrained_with_one_output_per_class():
    network = build_architecture("squeezenet1_1", num_classes=3)
    assert network(torch.rand(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize(
    "name, message",
    [
        ("resnet19", r"--arch 'resnet19' is not a torchvision classification architecture; did you mean resnet18"),
        ("ResNet-50", r"did you mean resnet50"),
        ("efficientnet_b8", r"did you mean efficientnet_b7"),
        ("xyzzy", r"'xyzzy' is not .*; see torchvision\.models\.list_models\(module=torchvision\.models\)"),
        ("fasterrcnn_resnet50_fpn", r"'fasterrcnn_resnet50_fpn' is a torchvision model but not an image classifier"),
    ],
)
def test_unknown_architectures_suggest_the_closest(name, message):
    with pytest.raises(ModelSourceError, match=message):
        build_architecture(name, num_classes=3)


def test_model_kwargs_must_be_a_json_object():
    assert parse_model_kwargs(None) == {}
    assert parse_model_kwargs('{"num_classes": 5, "width": 16}') == {"num_classes": 5, "width": 16}
    with pytest.raises(ModelSourceError, match=r"--model-kwargs '\{num_classes: 5\}' is not valid JSON"):
        parse_model_kwargs("{num_classes: 5}")
    with pytest.raises(ModelSourceError, match=r"--model-kwargs must be a JSON object .* got a JSON list"):
        parse_model_kwargs("[5]")


def test_model_file_class_with_kwargs(tmp_path):
    path = write_module(tmp_path, "net.py", NET_PY)
    network = build_from_model_file(f"{path}:Net", {"num_classes": 5, "width": 4})
    assert type(network).__name__ == "Net" and network.conv.out_channels == 4
    assert network(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_model_file_factory_function(tmp_path):
    path = write_module(tmp_path, "net.py", NET_PY)
    assert build_from_model_file(f"{path}:make_net", {"classes": 2})(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def test_model_file_may_import_its_neighbours(tmp_path):
    write_module(tmp_path, "my_layers.py", "from torch import nn\nclass Stem(nn.Conv2d):\n    pass\n")
    path = write_module(
        tmp_path,
        "model-v2.py",  # not even an importable module name
        """
        from torch import nn
        from my_layers import Stem

        class Net(nn.Sequential):
            def __init__(self):
                super().__init__(Stem(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        """,
    )
    assert build_from_model_file(f"{path}:Net", {})(torch.rand(1, 3, 16, 16)).shape == (1, 2)


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("{dir}/net.py", {}, r"--model-file '.*net.py': expected path/to/file.py:ClassName"),
        ("{dir}/missing.py:Net", {}, r"--model-file: .*missing.py: no such file"),
        ("{dir}/net.py:Netz", {}, r"net.py defines no 'Netz'; the nn.Module classes it defines: Net"),
        ("{dir}/net.py:NOT_A_MODEL", {}, r"net.py has no callable 'NOT_A_MODEL'"),
        ("{dir}/net.py:not_a_module", {}, r"not_a_module\(\.\.\.\) returned a str, not an nn.Module"),
        (
            "{dir}/net.py:Net",
            {"classes": 5},
            r"Net\(\*\*\{\"classes\": 5\}\) failed: TypeError: .*unexpected keyword argument 'classes'",
        ),
    ],
)
def test_model_file_errors(tmp_path, spec, kwargs, message):
    write_module(tmp_path, "net.py", NET_PY)
    with pytest.raises(ModelSourceError, match=message):
        build_from_model_file(spec.format(dir=tmp_path), kwargs)


@pytest.mark.parametrize(
    "source, message",
    [
        ("import timm_is_not_installed_here\n", r"importing .*broken.py failed: ModuleNotFoundError: No module named"),
        ("def forward(:\n", r"importing .*broken.py failed: SyntaxError: invalid syntax \(broken.py, line 1\)"),
        ("raise RuntimeError('needs a GPU')\n", r"importing .*broken.py failed: RuntimeError: needs a GPU"),
    ],
)
def test_model_files_that_do_not_import(tmp_path, source, message):
    path = write_module(tmp_path, "broken.py", source)
    with pytest.raises(ModelSourceError, match=message):
        build_from_model_file(f"{path}:Net", {})


def test_an_exported_predictor_passes_and_gives_its_class_names(tiny_pt):
    assert check_exported_pt(tiny_pt) == class_names(5)


class LogitsPredictor(Predictor):
    """A hand-made variant whose classify forgets the softmax."""

    @torch.jit.export
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


class LabelledNetwork(nn.Module):
    """Carries class_names but none of the Predictor's methods."""

    def __init__(self) -> None:
        super().__init__()
        self.network = TinyCNN(5)
        self.class_names = class_names(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class HalfPredictor(nn.Module):
    """Has a Predictor's preprocess and classify, but neither class_names nor resize_size."""

    def __init__(self) -> None:
        super().__init__()
        self.network = TinyCNN(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)

    @torch.jit.export
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        return image.float()

    @torch.jit.export
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch).softmax(1)


def with_network(predictor: Predictor, network: nn.Module) -> Predictor:
    """A Predictor whose network was swapped after the constructor's checks, as a hand-edited file could be."""
    predictor.model = network
    return predictor


def save_scripted(module: nn.Module, path):
    """Saved without the export's verification, as someone's own TorchScript file would be."""
    scripted = script_predictor(module) if isinstance(module, Predictor) else torch.jit.script(module)
    scripted.save(str(path))
    return path


def test_exported_pt_errors(tmp_path):
    with pytest.raises(ModelSourceError, match=r"--pt: .*gone.pt: no such file"):
        check_exported_pt(tmp_path / "gone.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelSourceError, match=r"junk.pt is not a TorchScript file \(PytorchStreamReader"):
        check_exported_pt(tmp_path / "junk.pt")
    torch.save(TinyCNN(5).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(
        ModelSourceError, match=r"it is a checkpoint: pass it as --weights, with --arch or --model-file"
    ):
        check_exported_pt(tmp_path / "weights.pt")


@pytest.mark.parametrize(
    "module, error, message",
    [
        (TinyCNN(5), ModelSourceError, r"has no class_names: give the scripted module a `class_names` attribute"),
        (LabelledNetwork(), ModelSourceError, r"forward returns logits, not probabilities"),
        (HalfPredictor(), ModelSourceError, r"not a complete Predictor .* \(it has no class_names, resize_size\)"),
        (LogitsPredictor(TinyCNN(5), class_names(5)), ModelSourceError, r"does not answer probabilities"),
        (
            with_network(Predictor(TinyCNN(5), class_names(5)), TinyCNN(4)),
            ModelSourceError,
            r"answers shape \[1, 4\] for one image, but has 5 class names",
        ),
        (Predictor(TinyCNN(2), ["cat", "cat"]), ClassNamesError, r"duplicated class names: 'cat'"),
    ],
)
def test_torchscript_files_that_are_not_working_predictors_are_refused(tmp_path, module, error, message):
    path = save_scripted(module, tmp_path / "model.pt")
    with pytest.raises(error, match=message):
        check_exported_pt(path)
