"""The handler's own metrics. TorchServe 0.12 exports only what metrics.yaml declares, in this order of dimensions."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes

IMAGE_DECODE_TIME = "ImageDecodeTime"  # histogram, ms to decode one image
PREDICT_TIME = "PredictTime"  # histogram, ms to classify one batch and take its top-k
REJECTED_REQUESTS = "RejectedRequests"  # counter of refused requests and images, by ErrorType (InvalidImage, ...)


class HandlerMetrics:
    """Records through TorchServe's `context.metrics`; the worker prints them and the frontend exports them.

    TorchServe appends the ModelName and Level dimensions after ours, and the frontend matches dimension
    values to metrics.yaml by position: keep both in step.
    """

    def __init__(self, context: Any) -> None:
        self._metrics = context.metrics

    @contextmanager
    def decoding(self, idx: int) -> Iterator[None]:
        """Time decoding one image of request `idx`; a refused image records no time, only a rejection."""
        with self._timed(IMAGE_DECODE_TIME, idx):
            yield

    @contextmanager
    def predicting(self) -> Iterator[None]:
        """Time classifying the batch."""
        with self._timed(PREDICT_TIME, None):
            yield

    def rejected(self, error_type: str, idx: int) -> None:
        self._metrics.add_counter(REJECTED_REQUESTS, 1, idx, [Dimension("ErrorType", error_type)])

    @contextmanager
    def _timed(self, name: str, idx: int | None) -> Iterator[None]:
        start = time.perf_counter()
        yield  # an exception skips the record below: only successful work is timed
        elapsed_ms = round((time.perf_counter() - start) * 1000, 3)
        # A fresh dimension list each time: TorchServe appends its defaults to the list it is given.
        self._metrics.add_time(name, elapsed_ms, idx, "ms", [], MetricTypes.HISTOGRAM)
