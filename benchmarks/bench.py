"""`make bench`: the in-process limit, our served throughput and latency, the stock handler, large photos.

One invocation measures everything on this machine and prints ratios, which survive a noisy machine
better than absolute numbers. The load generator is mar_builder.load (threads in this process, one
request after another per client); its own CPU use is measured and printed.
"""

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Sequence

from PIL import Image

from benchmarks.in_process import load_handler, machine_limit
from benchmarks.large_photos import jpeg_of, reduced_vs_full_decode
from benchmarks.stock_archive import STOCK_NAME, build_stock_archive, captum_installed
from mar_builder.cli import main as build_main
from mar_builder.load import Load, Shot, percentile, photo_shots
from mar_builder.local_server import LocalTorchServe, TorchServeClient

logger = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass(frozen=True)
class Row:
    setup: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float  # the load generator's CPU time over the window, as a fraction of one core
    limit: float = 0.0  # (a) measured right before and right after this row, averaged


def measure(
    client: TorchServeClient, model: str, shots: Sequence[Shot], clients: int, warmup: float, seconds: float, setup: str
) -> Row:
    """Closed-loop load: `clients` clients back to back; counts what completes inside the window after warm-up."""
    with Load(client, model, shots, clients=clients, timeout=120) as load:
        time.sleep(warmup)
        start, cpu_start = time.monotonic(), time.process_time()
        time.sleep(seconds)
        end, cpu_end = time.monotonic(), time.process_time()
    window = [o for o in load.outcomes() if start <= o.ended <= end]
    latencies = [o.latency * 1000 for o in window if o.status == 200]
    return Row(
        setup,
        clients,
        len(latencies) / (end - start),
        percentile(latencies, 50),
        percentile(latencies, 99),
        sum(o.status != 200 for o in window),
        (cpu_end - cpu_start) / (end - start),
    )


def large_photo_latency(client: TorchServeClient, photos: Sequence[bytes], rounds: int) -> dict:
    """p50 latency of 12-megapixel and 600x400 JPEGs of the same photos, sent one at a time, alternating."""
    sizes = {
        "12 MP": [jpeg_of(Image.open(p), 12) for p in photos],
        "600x400": [jpeg_of(Image.open(p), 0.24) for p in photos],
    }
    latencies = {name: [] for name in sizes}
    for i in range(rounds + 1):
        for name, jpegs in sizes.items():
            for jpeg in jpegs:
                start = time.monotonic()
                response = client.predict("classifier", jpeg)
                assert response.status == 200, response.body[:200]
                if i:  # the first round warms up
                    latencies[name].append((time.monotonic() - start) * 1000)
    return {name: percentile(values, 50) for name, values in latencies.items()}


def run(args: argparse.Namespace) -> List[str]:
    if not captum_installed():
        raise SystemExit("error: the stock handler needs captum: run `make bench` (it installs requirements-bench.txt)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    store = workdir / "model_store"
    assert build_main(["build", "--model-store", str(store)]) == 0
    build_stock_archive(store)
    with zipfile.ZipFile(store / "classifier.mar") as archive:
        archive.extract("classifier.pt", workdir)
    pt_path = workdir / "classifier.pt"
    shots = photo_shots()
    sample_paths = [Path(__file__).resolve().parent.parent / "samples" / s.kind for s in shots]

    bodies = [s.body for s in shots]
    handler, context = load_handler(pt_path)
    agreement = [reduced_vs_full_decode(handler, context, jpeg_of(Image.open(p), 12)) for p in sample_paths]

    # This shared machine's speed drifts by 10-20 % within minutes: (a) is measured before and after
    # each of our rows, and each row is compared with the mean of the two around it.
    logger.info("(a) in-process limit, %.0f s on one thread", args.limit_seconds)
    limits = [machine_limit(pt_path, bodies, args.limit_seconds)]
    rows: List[Row] = []
    with LocalTorchServe(workdir / "ours", store) as server:
        warm_up(server.client, "classifier", shots, 2 * args.warmup)
        for clients in args.clients:
            logger.info("(b) ours, %d clients", clients)
            row = measure(server.client, "classifier", shots, clients, args.warmup, args.seconds, "ours")
            logger.info("(a) again")
            limits.append(machine_limit(pt_path, bodies, args.limit_seconds))
            rows.append(replace(row, limit=(limits[-2] + limits[-1]) / 2))
        logger.info("(d) large photos")
        large = large_photo_latency(server.client, sample_paths, args.large_rounds)
    overall = sum(limits) / len(limits)
    stock = LocalTorchServe(workdir / "stock", store, models=[f"{STOCK_NAME}={STOCK_NAME}.mar"])
    stock.start(wait_for=[STOCK_NAME])
    try:
        warm_up(stock.client, STOCK_NAME, shots, 2 * args.warmup)
        for clients in args.clients:
            logger.info("(c) stock image_classifier, %d clients", clients)
            row = measure(stock.client, STOCK_NAME, shots, clients, args.warmup, args.seconds, "stock")
            rows.append(replace(row, limit=overall))
    finally:
        stock.stop()
    return report(limits, rows, large, agreement, sample_paths)


def warm_up(client: TorchServeClient, model: str, shots: Sequence[Shot], seconds: float) -> None:
    """Load that is not measured: the frontend's JIT compiler and the workers' TorchScript profiling settle."""
    logger.info("warming up %s for %.0f s", model, seconds)
    with Load(client, model, shots, clients=4, timeout=120):
        time.sleep(seconds)


def report(
    limits: Sequence[float], rows: Sequence[Row], large: dict, agreement: Sequence[tuple], photos: Sequence[Path]
) -> List[str]:
    cores = os.cpu_count() or 1
    limit = sum(limits) / len(limits)
    lines = [
        f"Machine: {cores} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; photos: {', '.join(p.name for p in photos)}.",
        "",
        f"(a) in-process limit: {limit:.1f} photos/s on average ({limit / cores:.1f} per core x {cores} cores); "
        f"measured {', '.join(f'{x:.1f}' for x in limits)}: before our first row and after each",
        "",
        "| setup | clients | photos/s | p50 ms | p99 ms | errors | load generator CPU | vs limit (a) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.setup} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.errors} | "
            f"{100 * r.client_cpu:.0f} % of a core | {r.rps / r.limit:.2f} |"
        )
    ours = {r.clients: r for r in rows if r.setup == "ours"}
    stock = {r.clients: r for r in rows if r.setup == "stock"}
    lines.append("")
    for clients in sorted(ours):
        o, s = ours[clients], stock.get(clients)
        versus_stock = f"{o.rps / s.rps:.1f}x the stock handler" if s and s.rps else "stock: no answers"
        lines.append(
            f"- {clients} clients: (b)/(a) = {o.rps / o.limit:.2f}, p99/p50 = {o.p99_ms / max(o.p50_ms, 1e-9):.1f}, "
            f"(b)/(c) = {versus_stock}"
        )
    ratio = large["12 MP"] / large["600x400"]
    lines.append(f"- (d) 12 MP JPEG p50 {large['12 MP']:.0f} ms vs 600x400 p50 {large['600x400']:.0f} ms: {ratio:.2f}x")
    for path, (same_top1, difference, margin, answer) in zip(photos, agreement, strict=True):
        verdict = "same as" if same_top1 else "differs from"
        lines.append(
            f"  - {path.name} at 12 MP: top-1 {next(iter(answer))!r} {verdict} a full-resolution decode "
            f"(whose top-1 leads by {margin:.3f}); largest probability difference {difference:.4f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="measured window per setting (default: %(default)s)"
    )
    parser.add_argument(
        "--limit-seconds", type=float, default=10.0, help="each in-process measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="unmeasured seconds before each window (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="concurrent clients (default: 1 4 8)")
    parser.add_argument(
        "--large-rounds", type=int, default=5, help="rounds of large vs small photos (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("ts").setLevel(logging.WARNING)  # the in-process handler's per-request metric lines
    lines = run(args)
    print("\n".join(lines))
    RESULTS.write_text("# Latest `make bench`\n\n" + "\n".join(lines) + "\n")
    logger.info("written to %s", RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
