"""`make soak`: serve the built archive, drive mixed good and bad traffic, report errors, latency and worker RSS."""

import argparse
import base64
import json
import logging
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from itertools import zip_longest
from pathlib import Path
from typing import Dict, List, Sequence

from .load import SAMPLES, Load, Outcome, Shot, failures, percentile, photo_shots
from .local_server import REPO_ROOT, LocalTorchServe, ServerError, TorchServeClient

logger = logging.getLogger("mar_builder.server.soak")
RSS_GROWTH_LIMIT = 0.10  # the target: worker memory grows less than 10 % after warm-up
PROGRESS_EVERY_S = 30.0


def png_written_by_hand(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG with exactly these header fields and pixel data, whatever they say: for odd and hostile inputs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and carries none: a decompression-bomb header."""
    return png_written_by_hand(width, height, 8, 2, zlib.compress(b""))  # 8-bit RGB


def traffic() -> List[Shot]:
    """Valid photos (raw and as base64 JSON), each twice, and one of each bad input: about 60 % good."""
    photos = photo_shots()
    as_json = Shot(
        f"{photos[0].kind} as base64 JSON",
        json.dumps({"data": base64.b64encode(photos[0].body).decode()}).encode(),
        "application/json",
    )
    jpeg = (SAMPLES / "rocket.jpg").read_bytes()
    bad = [
        Shot("garbage bytes", b"this is not an image " * 40, valid=False),
        Shot("truncated JPEG", jpeg[: len(jpeg) // 2], valid=False),
        Shot("malformed JSON", b'{"data": "', "application/json", valid=False),
        Shot("pixel-bomb PNG header", png_header(50_000, 50_000), valid=False),
        Shot("empty body", b"", valid=False),
    ]
    # Good and bad alternate, so batches mix both.
    return [shot for pair in zip_longest([*photos, as_json] * 2, bad) for shot in pair if shot is not None]


def worker_rss(client: TorchServeClient, model: str) -> Dict[int, int]:
    """{pid: resident memory in bytes} of the model's workers, read from /proc."""
    rss = {}
    for worker in client.workers(model):
        status = Path(f"/proc/{worker['pid']}/status").read_text()
        kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        rss[worker["pid"]] = int(kilobytes) * 1024
    return rss


def megabytes(rss: Dict[int, int]) -> str:
    return f"{sum(rss.values()) / 2**20:.1f} MB"


def report(outcomes: Sequence[Outcome], soak_from: float, rss_start: Dict[int, int], rss_end: Dict[int, int]) -> bool:
    """Log the numbers; True when the targets were met. Latency counts the requests after warm-up."""
    valid = [o for o in outcomes if o.valid]
    seconds = max((o.ended for o in outcomes), default=0.0) - min((o.started for o in outcomes), default=0.0)
    logger.info(
        "requests: %d in %.0f s (%.1f/s): %d valid images, %d bad inputs",
        len(outcomes),
        seconds,
        len(outcomes) / max(seconds, 1e-9),
        len(valid),
        len(outcomes) - len(valid),
    )
    for (status, error_type), count in sorted(Counter((o.status, o.error_type) for o in outcomes).items()):
        logger.info("  %9s %-24s %6d", status or "no answer", error_type or "OK", count)
    measured = [o for o in outcomes if o.started >= soak_from]
    for name, group in (("all", measured), ("valid images", [o for o in measured if o.valid])):
        ms = [o.latency * 1000 for o in group]
        logger.info(
            "latency after warm-up (%s): p50 %.0f ms, p99 %.0f ms, max %.0f ms",
            name,
            percentile(ms, 50),
            percentile(ms, 99),
            max(ms, default=0.0),
        )
    growth = sum(rss_end.values()) / max(1, sum(rss_start.values())) - 1
    start, end = megabytes(rss_start), megabytes(rss_end)
    logger.info("worker RSS: %s after warm-up, %s at the end (%+.1f %%)", start, end, 100 * growth)
    for pid in sorted(rss_start):
        start, end = megabytes({pid: rss_start[pid]}), megabytes({pid: rss_end.get(pid, 0)})
        logger.info("  worker pid %d: %s -> %s", pid, start, end)
    problems = []
    broken = failures(outcomes)
    if broken:
        kinds = Counter(f"{o.kind}: {o.status} {o.message}" for o in broken)
        problems.append(f"{len(broken)} requests broke the contract (valid: 200, bad: 4xx): {dict(kinds)}")
    if set(rss_start) != set(rss_end):
        problems.append(f"workers were replaced during the soak: pids {sorted(rss_start)} -> {sorted(rss_end)}")
    elif growth >= RSS_GROWTH_LIMIT:
        problems.append(f"worker RSS grew {100 * growth:.1f} %, the limit is {100 * RSS_GROWTH_LIMIT:.0f} %")
    for problem in problems:
        logger.error("FAIL: %s", problem)
    if not problems:
        limit = 100 * RSS_GROWTH_LIMIT
        logger.info("PASS: every valid image got 200, every bad input a 4xx, worker RSS grew under %.0f %%", limit)
    return not problems


def soak(model_store: Path, seconds: float, warmup: float, clients: int, workdir: Path) -> bool:
    shots = traffic()
    with LocalTorchServe(workdir, model_store) as server:
        client = server.client
        logger.info(
            "TorchServe ready at %s: %.0f s warm-up, then %.0f s soak; %d clients cycling through %d requests",
            client.inference_url,
            warmup,
            seconds,
            clients,
            len(shots),
        )
        with Load(client, "classifier", shots, clients=clients) as load:
            time.sleep(warmup)
            rss_start, soak_from = worker_rss(client, "classifier"), time.monotonic()
            while (left := seconds - (time.monotonic() - soak_from)) > 0:
                time.sleep(min(PROGRESS_EVERY_S, left))
                rss = worker_rss(client, "classifier")
                elapsed = time.monotonic() - soak_from
                logger.info("%5.0f s: %d requests, worker RSS %s", elapsed, len(load.outcomes()), megabytes(rss))
            rss_end = worker_rss(client, "classifier")
        # Every request counts, warm-up included: a 5xx there is a failure too.
        return report(load.outcomes(), soak_from, rss_start, rss_end)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mar_builder.server.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=180.0, help="soak after warm-up (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=20.0, help="load before measuring (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--model-store", type=Path, default=REPO_ROOT / "model_store", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.model_store / "classifier.mar").exists():
        print(f"error: no {args.model_store / 'classifier.mar'}; run `make build` first", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        passed = soak(args.model_store, args.seconds, args.warmup, args.clients, workdir)
    except (ServerError, OSError) as e:
        print(f"error: {e}; TorchServe's logs are in {workdir}/logs", file=sys.stderr)
        return 1
    if passed:
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    logger.info("TorchServe's logs are kept in %s/logs", workdir)
    return 1


if __name__ == "__main__":
    sys.exit(main())
