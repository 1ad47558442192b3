"""classify.onnx: exported from the verified .pt, checked in ONNX Runtime, and the archive's runtime choice."""

import logging
import zipfile
from importlib.metadata import version

import classify_runtime
import numpy as np
import onnxruntime
import pi_heif
import pytest
import simplejpeg
import torch
import yaml
from conftest import TinyCNN, class_names
from torch import nn

from mar_builder.archive import runtimes
from mar_builder.archive.model_archive import PI_HEIF_FOR_PYTHON_39
from mar_builder.cli import main
from mar_builder.errors import ExportError, SettingsError
from mar_builder.model import onnx_export
from mar_builder.model.export import export_predictor, random_images
from mar_builder.model.onnx_export import export_onnx, runtime_files, verify_onnx
from mar_builder.model.predictor import Predictor
from mar_builder.model.scripted_classifier import export_adapter

HEIF = [f'pi-heif=={pi_heif.__version__}; python_version >= "3.10"', PI_HEIF_FOR_PYTHON_39]


def load(path):
    return torch.jit.load(str(path), map_location="cpu").eval()


def test_the_build_side_and_the_handler_use_the_same_names():
    assert set(runtimes.RUNTIMES) == set(classify_runtime.RUNTIMES)
    assert (runtimes.TORCHSCRIPT, runtimes.ONNXRUNTIME) == (classify_runtime.TORCHSCRIPT, classify_runtime.ONNXRUNTIME)
    assert runtimes.ONNX_FILE == classify_runtime.ONNX_FILE


def test_the_onnx_file_equals_the_pt_classify_at_any_batch_size(tiny_pt, tmp_path):
    predictor = load(tiny_pt)
    path = export_onnx(predictor, tmp_path / "classify.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "images" and given.shape[1:] == [3, 224, 224] and isinstance(given.shape[0], str)
    crops = torch.stack([predictor.preprocess(image) for image in random_images()] * 2)  # 8 images
    for size in (1, 3, 8):
        (got,) = session.run(None, {"images": crops[:size].numpy()})
        expected = predictor.classify(crops[:size])
        assert got.shape == (size, 5) and np.allclose(got, expected.numpy(), atol=1e-5)
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_an_onnx_file_that_differs_from_the_pt_is_refused(tiny_pt, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    export_predictor(Predictor(TinyCNN(5), class_names(5)), other)  # same shape, other weights
    path = export_onnx(load(other), tmp_path / "other.onnx")
    with pytest.raises(ExportError, match=r"differs from the .pt's on a batch of 1: shape \[1, 5\] against \[1, 5\], "):
        verify_onnx(path, load(tiny_pt))


def test_a_scripted_batch_norm_is_exported_with_its_running_statistics(tmp_path):
    """A scripted network's BatchNorm has a training branch: the export must take the eval one."""
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=4),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    network[1].running_mean.uniform_(-1, 1)
    network[1].running_var.uniform_(0.5, 2)
    pt = tmp_path / "bn.pt"
    assert export_predictor(Predictor(network, class_names(5)), pt) == "scripted"
    export_onnx(load(pt), tmp_path / "classify.onnx")  # verify_onnx inside raises on any difference


def test_a_failed_export_writes_nothing(tiny_pt, tmp_path, monkeypatch):
    def unconvertible(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset version 18 is not supported")

    monkeypatch.setattr(torch.onnx, "export", unconvertible)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="classify could not be exported to ONNX: RuntimeError: Exporting"):
        export_onnx(load(tiny_pt), out / "classify.onnx")
    assert list(out.iterdir()) == []


def test_the_default_runtime_falls_back_to_the_pt_with_one_warning(tiny_pt, tmp_path, monkeypatch, caplog):
    def fails(predictor, output):
        raise ExportError("classify could not be exported to ONNX: RuntimeError: no")

    monkeypatch.setattr(onnx_export, "export_onnx", fails)
    with caplog.at_level(logging.INFO):
        assert runtime_files(None, tiny_pt, tmp_path) == ("torchscript", None)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        "runtime: torchscript, not onnxruntime: classify could not be exported to ONNX: RuntimeError: no"
    )
    with pytest.raises(ExportError, match="could not be exported"):
        runtime_files("onnxruntime", tiny_pt, tmp_path)


def test_a_classifier_served_through_its_own_forward_runs_in_torchscript(tmp_path, caplog):
    class Probabilities(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x.mean(dim=(2, 3)), dim=1)

    pt = tmp_path / "adapter.pt"
    export_adapter(torch.jit.script(Probabilities()), ["r", "g", "b"], pt)
    with caplog.at_level(logging.INFO):
        assert runtime_files(None, pt, tmp_path) == ("torchscript", None)
    assert "runtime: torchscript (a classifier served through its own forward runs in TorchScript)" in caplog.text
    with pytest.raises(SettingsError, match="--runtime onnxruntime: a classifier served through its own forward"):
        runtime_files("onnxruntime", pt, tmp_path)
    assert runtime_files("torchscript", pt, tmp_path) == ("torchscript", None)


@pytest.mark.parametrize("flag, runtime", [([], "onnxruntime"), (["--runtime", "torchscript"], "torchscript")])
def test_the_archive_records_its_runtime_and_carries_what_it_needs(tiny_pt, tmp_path, capsys, flag, runtime):
    store = tmp_path / "store"
    assert main(["build", "--pt", str(tiny_pt), "--name", "tiny", "--model-store", str(store), *flag]) == 0
    with zipfile.ZipFile(store / "tiny.mar") as archive:
        names = set(archive.namelist())
        config = yaml.safe_load(archive.read("model-config.yaml"))
        requirements = archive.read("requirements.txt").decode().splitlines()
        manifest = yaml.safe_load(archive.read("MAR-INF/MANIFEST.json"))
    assert config["handler"]["runtime"] == runtime and manifest["model"]["requirementsFile"] == "requirements.txt"
    captum = [f'captum=={version("captum")}; python_version >= "3.10"', 'captum>=0.6.0; python_version < "3.10"']
    if runtime == "onnxruntime":
        assert "classify.onnx" in names
        assert requirements == [
            f"onnxruntime=={onnxruntime.__version__}",
            f"simplejpeg=={simplejpeg.__version__}",
            *captum,
            *HEIF,
        ]
    else:
        assert "classify.onnx" not in names
        assert requirements == [f"simplejpeg=={simplejpeg.__version__}", *captum, *HEIF]
