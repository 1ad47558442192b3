"""The machine's limit: the handler's own decode, preprocess and classify path, in process, on one thread.

Each runtime's limit is measured in a process of its own (`python -m benchmarks.in_process`), as a worker
has one: what a handler switches for its whole process (oneDNN fusion, glibc's malloc thresholds) must not
carry over from one measurement to the next.
"""

from __future__ import annotations  # runs on the image stack's Python 3.9 too (bench's image-stack limit)

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# The handler's modules import each other by bare name, as inside a .mar; the fake context lives with the tests.
for folder in ("handler", "tests"):
    if str(REPO_ROOT / folder) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / folder))

STAGES = ("decode", "preprocess", "classify")


def extract_archive(mar: Path, destination: Path) -> Path:
    """Unpack a .mar as TorchServe does for a worker; returns the path of its .pt."""
    from mar_builder.validation.mar_files import read_manifest

    with zipfile.ZipFile(mar) as archive:
        archive.extractall(destination)
    return destination / read_manifest(mar).serialized_file


def load_handler(pt_path: Path, handler_overrides: Dict[str, Any] | None = None) -> Any:
    """A ClassifierHandler initialized as a worker would be: from the model-config.yaml beside the .pt (an
    unpacked archive), or else from handler/model-config.yaml."""
    from classifier_handler import ClassifierHandler
    from fake_context import FakeContext

    beside = pt_path.parent / "model-config.yaml"
    config_path = beside if beside.exists() else REPO_ROOT / "handler" / "model-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["handler"] = {**config.get("handler", {}), **(handler_overrides or {})}
    context = FakeContext(pt_path.parent, pt_path.name, config)
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


def photos_per_second_per_core(handler: Any, context: Any, photos: Sequence[bytes], seconds: float) -> float:
    """Photos a second on one thread, each decoded, preprocessed and classified alone, as one request."""
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


def stage_ms(handler: Any, photos: Sequence[bytes], rounds: int = 5) -> Dict[str, float]:
    """Milliseconds per photo of each stage of the handler's path, on one thread: the median over `rounds`
    of each photo, averaged over the photos. "classify" includes the top-k, as the handler's PredictTime."""
    from image_decoding import decode_image

    per_photo: Dict[str, list] = {stage: [] for stage in STAGES}
    for photo in photos:
        times: Dict[str, list] = {stage: [] for stage in STAGES}
        for _ in range(rounds):
            t0 = time.perf_counter()
            image = decode_image(photo, handler.settings.max_image_pixels, handler.decode_min_side)
            t1 = time.perf_counter()
            crop = handler.model.preprocess(image)
            t2 = time.perf_counter()
            handler.classify(crop.unsqueeze(0)).topk(handler.topk, dim=1)
            t3 = time.perf_counter()
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2)):  # noqa: B905 (no strict=: Python 3.9 too)
                times[stage].append(seconds * 1000)
        for stage in STAGES:
            per_photo[stage].append(statistics.median(times[stage]))
    return {stage: statistics.mean(values) for stage, values in per_photo.items()}


def explain_ms(handler: Any, photos: Sequence[bytes], rounds: int = 3) -> float:
    """Milliseconds to explain one photo (its attribution grid for the predicted class, as /explanations
    computes it after the prediction) on one thread: the median over `rounds` per photo, averaged over
    the photos; the first call, which loads the plain copy of the .pt and optimizes its graph, is left out."""
    from image_decoding import decode_image

    per_photo = []
    for photo in photos:
        image = decode_image(photo, handler.settings.max_image_pixels, handler.decode_min_side)
        index = int(handler.classify(handler.model.preprocess(image).unsqueeze(0))[0].argmax())
        handler.explainer.attribution_grid(image, index)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            handler.explainer.attribution_grid(image, index)
            times.append((time.perf_counter() - start) * 1000)
        per_photo.append(statistics.median(times))
    return statistics.mean(per_photo)


@dataclass(frozen=True)
class Limit:
    """One runtime's in-process limit, measured in a process of its own."""

    photos_per_second: float  # one thread's rate times the machine's cores
    stages: Dict[str, float]  # stage_ms
    explain_ms: float  # explain_ms: one photo's explanation, on top of its prediction


def machine_limit(
    pt_path: Path, seconds: float, handler_overrides: Dict[str, Any] | None = None, python: str = sys.executable
) -> Limit:
    """Photos a second the whole machine could classify (one core's rate times the cores), and the stages;
    `python` runs the measurement (another venv's: the image stack's)."""
    settings = json.dumps(handler_overrides or {})
    measured = _in_own_process(pt_path, "--seconds", str(seconds), "--handler-settings", settings, python=python)
    return Limit(measured["per_core"] * (os.cpu_count() or 1), measured["stages"], measured["explain_ms"])


def answers_of(pt_path: Path, photos: Path) -> Dict[str, Dict[str, float]]:
    """The archive's top-k answer for each JPEG and PNG under `photos`, through the handler in a process
    of its own, by path relative to `photos`."""
    return _in_own_process(pt_path, "--answers", str(photos))


def _in_own_process(pt_path: Path, *options: str, python: str = sys.executable) -> Any:
    """`python -m benchmarks.in_process PT OPTIONS...` in a process of its own: the JSON it prints."""
    command = [python, "-m", "benchmarks.in_process", str(pt_path), *options]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"in-process measurement failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _answers(handler: Any, context: Any, photos: Path) -> Dict[str, Dict[str, float]]:
    found = {}
    for path in sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        (answer,) = handler.handle([{"body": bytearray(path.read_bytes())}], context.with_requests([{}]))
        assert isinstance(answer, dict), (path, answer)
        found[str(path.relative_to(photos))] = answer
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one thread's photos/s and stage times, printed as JSON")
    parser.add_argument("pt", type=Path, help="the .pt of an unpacked archive (its model-config.yaml beside it)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--handler-settings", type=json.loads, default={}, help="JSON object of handler overrides")
    parser.add_argument("--answers", type=Path, help="instead: print the answer for each photo under this folder")
    args = parser.parse_args(argv)
    handler, context = load_handler(args.pt, {**args.handler_settings, "threads_per_worker": 1})
    assert torch.get_num_threads() == 1
    if args.answers is not None:
        print(json.dumps(_answers(handler, context, args.answers)))
        return 0
    # The samples, as mar_builder.server.load.photo_shots sends them (not imported: the image stack runs this too).
    photos = [p.read_bytes() for p in sorted((REPO_ROOT / "samples").iterdir()) if p.suffix in (".png", ".jpg")]
    per_core = photos_per_second_per_core(handler, context, photos, args.seconds)
    stages = stage_ms(handler, photos)
    explained = explain_ms(handler, photos)
    print(
        json.dumps({"per_core": per_core, "stages": stages, "explain_ms": explained, "runtime": handler.classify.name})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
