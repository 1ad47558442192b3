"""The handler's settings, read from the `handler:` section of the archived model-config.yaml."""

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from image_decoding import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class HandlerSettings:
    topk: int = 5  # labels per answer; the handler caps it at the number of classes
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # larger images get 413 before decoding
    threads_per_worker: int = 0  # torch intra-op threads; 0 picks CPU cores // workers

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), int) or isinstance(getattr(self, f.name), bool):
                raise ValueError(f"handler.{f.name} must be an integer, got {getattr(self, f.name)!r}")
        if self.topk < 1:
            raise ValueError(f"handler.topk must be >= 1, got {self.topk}")
        if self.max_image_pixels < 1:
            raise ValueError(f"handler.max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if self.threads_per_worker < 0:
            raise ValueError(f"handler.threads_per_worker must be >= 0, got {self.threads_per_worker}")

    @classmethod
    def from_model_config(cls, model_config: Mapping[str, Any]) -> "HandlerSettings":
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
