"""classify.onnx: the verified .pt's `classify` (network and softmax) for ONNX Runtime, with a dynamic batch axis."""

import logging
import warnings
from pathlib import Path
from typing import List, Tuple

import torch
from torch import nn

from ..archive.runtimes import DEFAULT_RUNTIME, ONNX_FILE, TORCHSCRIPT
from ..errors import ExportError, SettingsError, first_line
from .export import random_images, staged_file, torchscript_deprecation_acknowledged

logger = logging.getLogger(__name__)

# The TorchScript-based exporter writes opsets up to 20 and ONNX Runtime 1.32 runs them all; 18 also loads in
# older ONNX Runtime releases (1.14 and later), such as an image's own.
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"


class _Classify(nn.Module):
    """The loaded .pt's `classify` as a module's forward, which is what the exporter converts."""

    def __init__(self, predictor: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.predictor.classify(batch)


def runtime_files(requested: str | None, pt_path: Path, folder: Path) -> Tuple[str, Path | None]:
    """The archive's runtime and the file it needs beside the .pt (None for the .pt alone).

    `requested` is --runtime, or None for the default. When the default cannot be had (a module served
    through its own forward, an export that fails or differs), the archive falls back to the .pt with
    one log line; when it was asked for, that raises SettingsError or ExportError instead.
    """
    runtime = requested or DEFAULT_RUNTIME
    if runtime == TORCHSCRIPT:
        return runtime, None
    with torchscript_deprecation_acknowledged():
        predictor = torch.jit.load(str(pt_path), map_location="cpu").eval()
    if not hasattr(predictor, "input_size") and not hasattr(predictor, "crop_size"):
        # A wrapped classifier (scripted_classifier.ForwardAdapter) runs its whole forward in preprocess.
        why = "a classifier served through its own forward runs in TorchScript"
        if requested:
            raise SettingsError(f"--runtime {runtime}: {why}; use --rebuild to export it as this tool's Predictor")
        logger.info("runtime: torchscript (%s)", why)
        return TORCHSCRIPT, None
    try:
        onnx_path = export_onnx(predictor, folder / ONNX_FILE)
    except ExportError as e:
        if requested:
            raise
        logger.warning("runtime: torchscript, not onnxruntime: %s", first_line(e))
        return TORCHSCRIPT, None
    return runtime, onnx_path


def export_onnx(predictor: torch.jit.ScriptModule, output: Path) -> Path:
    """Write `predictor.classify` as ONNX to `output` and check it in ONNX Runtime; raises ExportError.

    The graph takes float32 images (N, C, h, w) (the .pt's input_size), N of any size, named "images", and gives float32
    probabilities (N, classes), named "probabilities". `output` is written only once the check passes.
    """
    try:
        import onnxruntime  # noqa: F401  (checked first: without it the export could not be verified)
    except ImportError:
        raise ExportError(
            "onnxruntime is not installed here (`.venv/bin/pip install -r requirements.txt` installs the pinned one)"
        ) from None
    input_size = classify_input_size(predictor)
    logger.info("exporting classify to %s (ONNX opset %d) and checking it in ONNX Runtime", ONNX_FILE, ONNX_OPSET)
    with staged_file(output) as tmp:
        try:
            # The TorchScript-based exporter converts exactly the graph that the .pt's checks passed, for every
            # .pt this tool writes (a scripted or traced network, a --pt Predictor with no eager module left),
            # in about 1 s. The torch.export-based one needs the eager module and took 14 s on the default.
            with warnings.catch_warnings():
                # TorchScript's and the exporter's deprecation notices, and its constant-folding remarks.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    # eval(): a fresh wrapper is in training mode, and the exporter then takes the training
                    # branch of a scripted BatchNorm (batch statistics: 0.16 off on a small CNN).
                    torch.jit.script(_Classify(predictor)).eval(),
                    (torch.zeros([2] + input_size),),
                    str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                )
        except Exception as e:  # the exporter raises many types for operators it cannot convert
            raise ExportError(f"classify could not be exported to ONNX: {type(e).__name__}: {first_line(e)}") from e
        verify_onnx(tmp, predictor)
    return output


def classify_input_size(predictor: torch.jit.ScriptModule) -> List[int]:
    """(C, h, w) that the .pt's classify takes: its input_size, or (3, crop, crop) for a .pt exported before
    recipes (which carries crop_size)."""
    if hasattr(predictor, "input_size"):
        return [int(v) for v in predictor.input_size]
    crop = int(predictor.crop_size)
    return [3, crop, crop]


def verify_onnx(path: Path, predictor: torch.jit.ScriptModule, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """ONNX Runtime on `path` against the .pt's classify, on export.random_images preprocessed by the .pt:
    one at a time and all in one batch. Raises ExportError."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot load the exported classify: {first_line(e)}") from e
    with torch.no_grad():
        crops = torch.stack([predictor.preprocess(image) for image in random_images()])
        for batch in [crops[i : i + 1] for i in range(len(crops))] + [crops]:
            expected = predictor.classify(batch)
            try:
                (got,) = session.run(None, {INPUT_NAME: batch.numpy()})
            except Exception as e:
                raise ExportError(f"ONNX Runtime cannot run the exported classify: {first_line(e)}") from e
            got = torch.from_numpy(got)
            if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=rtol):
                largest = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
                raise ExportError(
                    f"ONNX Runtime's classify differs from the .pt's on a batch of {len(batch)}: shape "
                    f"{list(got.shape)} against {list(expected.shape)}, largest probability difference "
                    f"{largest:.2g} (allowed: {atol:g} + {rtol:g} x the probability)"
                )
