"""By hand, not in `make bench`: TorchServe's frontend under form-field floods (CVE-2024-29025) and at the body bound.

    .venv/bin/python -m benchmarks.form_flood --model-store DIR [--vmargs "-Xmx1g"] [--floods 3] [--at-once 8]

Starts one TorchServe (this checkout's config.properties, `--vmargs` added to its own), then, while another
client sends an ordinary prediction every half second: urlencoded forms of 400,000 and 3,000,000 fields and
a multipart form of 500,000 parts, one after another; then legitimate requests at the 32 MiB bound (a 40 MP
JPEG as base64 in JSON, and as a multipart file), alone and `--at-once` together. Prints each answer, its
seconds, and the frontend JVM's resident memory (RSS) after it and at its peak. docs/security.md has results.
"""

import argparse
import base64
import io
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import numpy as np
import psutil
from PIL import Image

from mar_builder.server.local_server import CONFIG_FILE, LocalTorchServe, read_properties

MODEL = "classifier"
MAX_BODY = 33_554_432  # config.properties' max_request_size
MEGAPIXELS_40 = (7296, 5472)  # 39.9 MP: under the handler's 40,000,000-pixel limit
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "chelsea.png"


def urlencoded_flood(fields: int, value_bytes: int) -> bytes:
    """`fields` fields `f0000001=aaa...`: the shape of the CVE's reports."""
    value = "a" * value_bytes
    return "&".join(f"f{i:07d}={value}" for i in range(fields)).encode()


def multipart_flood(parts: int, boundary: str = "b") -> bytes:
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f%07d"\r\n\r\na\r\n'
    return "".join(part % i for i in range(parts)).encode() + f"--{boundary}--\r\n".encode()


def noise_jpeg(limit: int, expand: float) -> bytes:
    """A 39.9 MP JPEG of noise, 4:4:4, of the highest quality whose size times `expand` stays under `limit`."""
    pixels = np.random.default_rng(0).integers(0, 256, (*MEGAPIXELS_40[::-1], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for quality in (90, 80, 70, 60, 50, 40, 30, 20):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, subsampling=0)
        if len(buffer.getvalue()) * expand < limit:
            return buffer.getvalue()
    raise RuntimeError("no quality fits")


def multipart_file(data: bytes, boundary: str = "photoboundary") -> Tuple[bytes, str]:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="photo.jpg"\r\n'
    head += "Content-Type: image/jpeg\r\n\r\n"
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class FrontendWatch:
    """The frontend JVM's RSS, sampled every 0.2 s; `peak()` since the last `reset()`."""

    def __init__(self, server: LocalTorchServe) -> None:
        tree = psutil.Process(server.process.pid).children(recursive=True)
        self.jvm = next(p for p in tree if p.name() == "java")
        self._peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self._peak = max(self._peak, self.jvm.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    def rss_mb(self) -> float:
        return self.jvm.memory_info().rss / 2**20 if self.jvm.is_running() else float("nan")

    def reset(self) -> None:
        self._peak = 0

    def peak_mb(self) -> float:
        return self._peak / 2**20


def send(server: LocalTorchServe, body: bytes, content_type: str, timeout: float = 600) -> Tuple[str, float]:
    start = time.monotonic()
    try:
        response = server.client.predict(MODEL, body, content_type, timeout=timeout)
        outcome = f"{response.status} {response.body[:90]!r}"
    except Exception as e:  # a reset or a timeout is an outcome here
        outcome = f"{type(e).__name__}: {str(e)[:90]}"
    return outcome, time.monotonic() - start


def ordinary_client(server: LocalTorchServe, photo: bytes, stop: threading.Event, log: List[Tuple[str, float]]):
    while not stop.is_set():
        log.append(send(server, photo, "application/octet-stream", timeout=300))
        stop.wait(0.5)


def report(name: str, watch: FrontendWatch, run: Callable[[], List[Tuple[str, float]]]) -> None:
    watch.reset()
    results = run()
    for outcome, seconds in results:
        print(f"  {name}: {outcome} in {seconds:.1f} s", flush=True)
    print(f"  {name}: RSS after {watch.rss_mb():.0f} MB, peak {watch.peak_mb():.0f} MB", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-store", type=Path, required=True, help="a folder holding classifier.mar")
    parser.add_argument("--vmargs", default="", help="added to config.properties' vmargs, e.g. -Xmx1g")
    parser.add_argument("--floods", type=int, default=3, help="how many times each flood is sent")
    parser.add_argument("--at-once", type=int, default=8, help="legitimate 32 MiB requests sent together")
    parser.add_argument("--skip-floods", action="store_true")
    args = parser.parse_args(argv)

    vmargs = read_properties(CONFIG_FILE)["vmargs"].replace(
        "-Dlog4j.configurationFile=log4j2.xml", f"-Dlog4j.configurationFile={CONFIG_FILE.parent / 'log4j2.xml'}"
    )
    photo = SAMPLE.read_bytes()
    jpeg_json = noise_jpeg(MAX_BODY - 100, 4 / 3)
    json_body = json.dumps({"data": base64.b64encode(jpeg_json).decode()}).encode()
    jpeg_file = noise_jpeg(MAX_BODY - 300, 1.0)
    multipart_body, multipart_type = multipart_file(jpeg_file)
    print(f"vmargs: {vmargs} {args.vmargs}; JSON body {len(json_body)} B, multipart body {len(multipart_body)} B")
    floods = [
        ("urlencoded 400,000 fields", urlencoded_flood(400_000, 43), "application/x-www-form-urlencoded"),
        ("urlencoded 3,000,000 fields", urlencoded_flood(3_000_000, 1), "application/x-www-form-urlencoded"),
        ("multipart 500,000 parts", multipart_flood(500_000), "multipart/form-data; boundary=b"),
    ]
    with tempfile.TemporaryDirectory() as workdir:
        overrides = {"vmargs": f"{vmargs} {args.vmargs}".strip()}
        with LocalTorchServe(Path(workdir), args.model_store, overrides=overrides) as server:
            watch = FrontendWatch(server)
            print(f"started: RSS {watch.rss_mb():.0f} MB", flush=True)
            stop, ordinary = threading.Event(), []
            client = threading.Thread(target=ordinary_client, args=(server, photo, stop, ordinary))
            client.start()
            for name, body, content_type in [] if args.skip_floods else floods:
                print(f"{name}: {len(body)} B", flush=True)
                for _ in range(args.floods):
                    report(name, watch, lambda b=body, t=content_type: [send(server, b, t)])
            stop.set()
            client.join()
            statuses = [outcome.split(" ")[0] for outcome, _ in ordinary]
            counts = {s: statuses.count(s) for s in sorted(set(statuses))}
            slowest = max((seconds for _, seconds in ordinary), default=0.0)
            print(f"ordinary predictions meanwhile: {counts}, slowest {slowest:.1f} s", flush=True)
            for label, body, content_type in [
                ("JSON base64 40 MP", json_body, "application/json"),
                ("multipart 40 MP", multipart_body, multipart_type),
            ]:
                report(f"{label} alone", watch, lambda b=body, t=content_type: [send(server, b, t)])
                with ThreadPoolExecutor(args.at_once) as pool:
                    jobs = [(body, content_type)] * args.at_once
                    together = lambda j=jobs: list(pool.map(lambda a: send(server, *a), j))  # noqa: E731
                    report(f"{label} x{args.at_once} at once", watch, together)
            report("ordinary prediction after", watch, lambda: [send(server, photo, "application/octet-stream")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
