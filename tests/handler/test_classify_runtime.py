"""The worker's runtime for classify: ONNX Runtime from classify.onnx, the .pt, and the fallback between them."""

import logging
import sys

import classify_runtime
import pytest
import torch
from classifier_handler import ClassifierHandler
from fake_context import FakeContext
from image_variants import encode, sample
from malloc_tuning import keep_freed_buffers
from request_forms import raw

from mar_builder.model.onnx_export import export_onnx

CAT_JPEG = encode(sample("chelsea.png"), "JPEG")
SMALL_PNG = encode(sample("coffee.png").resize((40, 30)), "PNG")


@pytest.fixture
def model_dir(tiny_pt):
    """The tiny .pt with its classify.onnx beside it, as an unpacked archive holds them."""
    export_onnx(torch.jit.load(str(tiny_pt)), tiny_pt.parent / "classify.onnx")
    return tiny_pt


def answers(pt, **handler_settings):
    context = FakeContext(pt.parent, pt.name, {"minWorkers": 2, "handler": {"topk": 5, **handler_settings}})
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, handler.handle(context.deliver([raw(CAT_JPEG), raw(SMALL_PNG)]), context)


def test_onnx_runtime_answers_as_the_pt_does(model_dir):
    handler, onnx_answers = answers(model_dir, runtime="onnxruntime")
    assert handler.classify.name == "onnxruntime"
    _, pt_answers = answers(model_dir, runtime="torchscript", onednn_fusion=False)
    for got, expected in zip(onnx_answers, pt_answers, strict=True):
        assert list(got) == list(expected) and list(got.values()) == pytest.approx(list(expected.values()), abs=1e-5)


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("missing file", "the archive has no classify.onnx"),
        ("not installed", "onnxruntime is not installed in the worker's Python (the archive's requirements.txt pins"),
        ("damaged file", "classify.onnx did not load: "),
    ],
)
def test_a_worker_without_its_runtime_says_why_once_and_classifies_with_the_pt(
    model_dir, monkeypatch, caplog, damage, reason
):
    if damage == "missing file":
        (model_dir.parent / "classify.onnx").unlink()
    elif damage == "not installed":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    else:
        (model_dir.parent / "classify.onnx").write_bytes(b"\x08\x07not a model")
    with caplog.at_level(logging.INFO):
        handler, got = answers(model_dir, runtime="onnxruntime", onednn_fusion=False)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(f"runtime onnxruntime unavailable: {reason}")
    assert warning.endswith("; classifying with the .pt (TorchScript)")
    assert handler.classify.name == "torchscript"
    _, expected = answers(model_dir, runtime="torchscript", onednn_fusion=False)
    assert got == expected


def test_an_onnx_file_that_fails_to_run_falls_back_to_the_pt(model_dir, monkeypatch, caplog):
    def fails(self, batch):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")

    monkeypatch.setattr(classify_runtime.OnnxRuntimeClassify, "__call__", fails)
    with caplog.at_level(logging.INFO):
        handler, got = answers(model_dir, runtime="onnxruntime", onednn_fusion=False)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning == (
        "runtime onnxruntime unavailable: classify.onnx failed its warm-up ([ONNXRuntimeError] : 6 : "
        "RUNTIME_EXCEPTION : Non-zero status code); classifying with the .pt (TorchScript)"
    )
    assert handler.classify.name == "torchscript"
    assert got == answers(model_dir, runtime="torchscript", onednn_fusion=False)[1]


def test_an_unknown_runtime_is_refused_when_the_worker_loads(model_dir):
    with pytest.raises(ValueError, match="handler.runtime must be one of torchscript, onnxruntime, got 'tensorrt'"):
        answers(model_dir, runtime="tensorrt")


def test_onednn_fusion_applies_to_the_frozen_pt_classify_and_keeps_its_answers(model_dir):
    handler, fused = answers(model_dir, runtime="torchscript")
    assert handler.classify.onednn_fusion
    assert not torch.jit.onednn_fusion_enabled()  # on only while classify runs: preprocess's graphs are never fused
    _, plain = answers(model_dir, runtime="torchscript", onednn_fusion=False)
    for got, expected in zip(fused, plain, strict=True):
        assert list(got) == list(expected) and list(got.values()) == pytest.approx(list(expected.values()), abs=1e-5)
    assert not answers(model_dir, runtime="torchscript", freeze=False)[0].classify.onednn_fusion


def test_a_network_the_fuser_cannot_run_is_served_without_fusion(model_dir, monkeypatch, caplog):
    run = classify_runtime.TorchScriptClassify.__call__

    def fails_when_fused(self, batch):
        if self.onednn_fusion:
            raise RuntimeError("bad optional access")
        return run(self, batch)

    monkeypatch.setattr(classify_runtime.TorchScriptClassify, "__call__", fails_when_fused)
    with caplog.at_level(logging.INFO):
        handler, got = answers(model_dir, runtime="torchscript")
    assert not handler.classify.onednn_fusion
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["oneDNN fusion failed on this network (bad optional access); the .pt runs without it"]
    assert got == answers(model_dir, runtime="torchscript", onednn_fusion=False)[1]


def test_the_worker_keeps_freed_buffers_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert keep_freed_buffers() == "malloc: mmap threshold 32 MiB, trim threshold 1000 MB"
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert keep_freed_buffers() == "malloc: left as the environment sets it (MALLOC_TRIM_THRESHOLD_)"
