"""The handler's settings, read from the `handler:` section of the archived model-config.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from classify_runtime import ONNXRUNTIME, RUNTIMES, TORCHSCRIPT
from image_decoding import DEFAULT_MAX_FULL_DECODE_PIXELS, DEFAULT_MAX_PIXELS

# The build side has the same names (mar_builder/archive/precision.py).
FP32, INT8 = "fp32", "int8"
PRECISIONS = (FP32, INT8)


@dataclass(frozen=True)
class HandlerSettings:
    topk: int = 5  # labels per answer; the handler caps it at the number of classes
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # larger images get 413 before decoding
    # Formats decoded at full resolution (PNG, GIF, WebP, BMP, TIFF, HEIC, AVIF: all but JPEG and JPEG
    # 2000, which decode scaled) above this get 413: about 1 s of a worker's CPU (docs/security.md).
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS
    # Images in one request (several file parts, "instances", a "data" list); more get 413. 16 photos
    # take about 0.5 s of one worker's core (1 s at 12 MP), so one request cannot hold a worker long.
    max_images_per_request: int = 16
    # Images per forward pass when a batch holds more (all requests' images are gathered first);
    # 0 = all at once (for a GPU). On this project's CPU 2 is as fast per image as 1 and keeps
    # single-image traffic (batchSize 2) exactly as before.
    classify_batch_size: int = 2
    # A body sent with Content-Encoding gzip or deflate decodes to at most this many bytes; more get
    # 413 (a gzip bomb). TorchServe's max_request_size bounds the compressed body; this, the decoded one.
    max_decoded_body_bytes: int = 33_554_432
    threads_per_worker: int = 0  # torch intra-op threads; 0 picks CPU cores // workers
    # JPEGs decode at 1/2, 1/4 or 1/8 scale while the short side stays >= this x the model's resize
    # size; 0 decodes every JPEG at full resolution. 4 keeps a 12 MP photo's probabilities within
    # 0.02 of a full decode; 2 is faster but moves them by up to 0.027 (make bench measures both).
    jpeg_draft_factor: int = 4
    # What runs `classify`: the .pt ("torchscript") or classify.onnx ("onnxruntime"). Written by
    # `build --runtime`; an archive without the setting predates classify.onnx and holds only the .pt.
    runtime: str = TORCHSCRIPT
    # classify.onnx's precision: "fp32", or "int8" (build --precision int8, docs/int8.md), which also records
    # the photos it was calibrated on, the held-out photos it was measured on, and the fraction of those
    # whose top-1 class is the fp32 one. The worker logs them at start.
    precision: str = FP32
    calibration_photos: int = 0
    held_out_photos: int = 0
    held_out_agreement_top1: float = 0.0
    # For the .pt: torch.jit.freeze it (folds batch norms and weights into the graph), run the network on
    # NHWC batches, and let oneDNN fuse convolutions with what follows them on the CPU (classify in 0.74x
    # the time here: docs/performance.md).
    freeze: bool = True
    channels_last: bool = True
    onednn_fusion: bool = True
    # Keep large freed buffers in the worker rather than returning them to the OS after each forward pass
    # (see malloc_tuning.py); MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment win.
    keep_freed_buffers: bool = True
    # Explanations (/explanations/<model>, KServe v1 :explain): gradients through a plain copy of the .pt
    # that the worker loads on the first one (docs/explanations.md); false answers them 404 and never
    # loads it. One forward and backward pass per image; the images per request bound a request's work.
    explanations: bool = True
    max_images_per_explanation: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = {"bool": bool, "str": str, "float": (int, float)}.get(str(f.type), int)
            # bool is a subclass of int: `topk: true` must not pass as 1.
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                kind = {"bool": "true or false", "str": "a string", "float": "a number"}.get(str(f.type), "an integer")
                raise ValueError(f"handler.{f.name} must be {kind}, got {value!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"handler.runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"handler.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == INT8 and self.runtime != ONNXRUNTIME:
            raise ValueError(f"handler.precision int8 is classify.onnx's: it needs handler.runtime {ONNXRUNTIME}")
        if not 0.0 <= self.held_out_agreement_top1 <= 1.0:
            raise ValueError(f"handler.held_out_agreement_top1 is a fraction, got {self.held_out_agreement_top1}")
        for name in (
            "topk",
            "max_image_pixels",
            "max_full_decode_pixels",
            "max_images_per_request",
            "max_images_per_explanation",
            "max_decoded_body_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"handler.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "threads_per_worker",
            "jpeg_draft_factor",
            "classify_batch_size",
            "calibration_photos",
            "held_out_photos",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"handler.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_model_config(cls, model_config: Mapping[str, Any]) -> HandlerSettings:
        section = (model_config or {}).get("handler") or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown handler settings {unknown}; known: {sorted(known)}")
        return cls(**section)

    def torch_threads(self, workers: int) -> int:
        if self.threads_per_worker:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // max(1, workers))
