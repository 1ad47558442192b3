"""The machine's limit: the handler's own decode, preprocess and classify path, in process, on one thread."""

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Sequence

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# The handler's modules import each other by bare name, as inside a .mar; the fake context lives with the tests.
for folder in ("handler", "tests"):
    if str(REPO_ROOT / folder) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / folder))


def load_handler(pt_path: Path, handler_overrides: Dict[str, Any] | None = None) -> Any:
    """A ClassifierHandler initialized as a worker would be, from the archived model-config.yaml."""
    from classifier_handler import ClassifierHandler
    from fake_context import FakeContext

    config = yaml.safe_load((REPO_ROOT / "handler" / "model-config.yaml").read_text())
    config["handler"] = {**config.get("handler", {}), **(handler_overrides or {})}
    context = FakeContext(pt_path.parent, pt_path.name, config)
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


def photos_per_second_per_core(pt_path: Path, photos: Sequence[bytes], seconds: float) -> float:
    """Photos a second on one thread, each decoded, preprocessed and classified alone, as one request."""
    handler, context = load_handler(pt_path, {"threads_per_worker": 1})
    assert torch.get_num_threads() == 1
    requests = [[{"body": bytearray(photo)}] for photo in photos]
    context.with_requests([{"Content-Type": "application/octet-stream"}])
    for request in requests:  # warm-up: the first calls profile and optimize the TorchScript graph
        handler.handle(request, context)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        answer = handler.handle(requests[done % len(requests)], context)
        assert isinstance(answer[0], dict) and not context.statuses, answer
        done += 1
    return done / (time.perf_counter() - start)


def machine_limit(pt_path: Path, photos: Sequence[bytes], seconds: float) -> float:
    """Photos a second the whole machine could classify: one core's rate times the cores."""
    return photos_per_second_per_core(pt_path, photos, seconds) * (os.cpu_count() or 1)
