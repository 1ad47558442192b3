"""What runs the Predictor's `classify` (network and output head) in a worker: the .pt, or ONNX Runtime."""

from __future__ import annotations

import logging
import os
from typing import Any, Union

import torch

logger = logging.getLogger(__name__)

TORCHSCRIPT = "torchscript"
ONNXRUNTIME = "onnxruntime"
RUNTIMES = (TORCHSCRIPT, ONNXRUNTIME)
# The .pt's `classify` exported by mar_builder/model/onnx_export.py, packed beside the .pt.
ONNX_FILE = "classify.onnx"


class TorchScriptClassify:
    """The .pt's own `classify`; image batches are made channels_last first when asked (faster convolutions).

    With `onednn_fusion`, TorchScript's oneDNN graph fuser is on while `classify` runs and off otherwise:
    the switch is process-wide and read when a graph is optimized (its first calls), so it reaches the
    network's graph and not `preprocess`, on which the fuser fails ("bad optional access").
    """

    name = TORCHSCRIPT

    def __init__(self, model: torch.jit.ScriptModule, memory_format: torch.memory_format, onednn_fusion: bool) -> None:
        self.model = model
        self.memory_format = memory_format
        self.onednn_fusion = onednn_fusion

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == 4:  # images; a wrapped classifier's preprocess gives probability rows
            batch = batch.contiguous(memory_format=self.memory_format)
        if not self.onednn_fusion:
            return self.model.classify(batch).cpu()
        torch.jit.enable_onednn_fusion(True)
        try:
            return self.model.classify(batch).cpu()
        finally:
            torch.jit.enable_onednn_fusion(False)


class OnnxRuntimeClassify:
    """classify.onnx in an ONNX Runtime CPU session: a float32 batch (N, 3, crop, crop) in, probabilities
    (N, classes) float32 out, as the .pt's `classify` gives them (verified at build time)."""

    name = ONNXRUNTIME
    onednn_fusion = False  # a TorchScript switch: never in ONNX Runtime

    def __init__(self, path: str, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One worker per core by default: its own threads only, no inter-op pool competing with the others.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (probabilities,) = self.session.run(None, {self.input_name: batch.contiguous().numpy()})
        return torch.from_numpy(probabilities)


Classify = Union[TorchScriptClassify, OnnxRuntimeClassify]  # a batch (N, ...) in, probabilities (N, classes) out


def load_classify(
    runtime: str,
    model_dir: str,
    model: Any,
    device: torch.device,
    threads: int,
    memory_format: torch.memory_format,
    onednn_fusion: bool,
) -> Classify:
    """The archive's runtime for `classify`, or the .pt's own when that runtime cannot run here.

    A worker without onnxruntime, an archive without classify.onnx, a file that does not load, or a GPU
    worker (the ONNX Runtime here is the CPU build) logs one warning saying why and classifies with the
    .pt, which every archive holds and which gives the same answers. `onednn_fusion` applies to the .pt
    on the CPU only.
    """
    if runtime == ONNXRUNTIME:
        path = os.path.join(model_dir, ONNX_FILE)
        reason = None
        if device.type != "cpu":
            reason = f"the worker runs on {device}, where the .pt runs on the GPU"
        elif not os.path.exists(path):
            reason = f"the archive has no {ONNX_FILE}"
        else:
            try:
                return OnnxRuntimeClassify(path, threads)
            except ImportError:
                reason = "onnxruntime is not installed in the worker's Python (the archive's requirements.txt pins it)"
            except Exception as e:  # ONNX Runtime raises its own types for files it cannot load
                reason = f"{ONNX_FILE} did not load: {type(e).__name__}: {e}"
        logger.warning("runtime onnxruntime unavailable: %s; classifying with the .pt (TorchScript)", reason)
    return TorchScriptClassify(model, memory_format, onednn_fusion and device.type == "cpu")
