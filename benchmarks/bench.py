"""`make bench`: the in-process limit, our served throughput and latency, the stock handler, large photos.

One invocation measures everything on this machine and prints ratios, which survive a noisy machine
better than absolute numbers. The load generator is mar_builder.server.load (threads in this process, one
request after another per client). Its CPU use is measured and printed, and so are the TorchServe
frontend's and the workers': on a machine this small, what the first two take the workers lack.
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
from typing import Dict, List, Sequence, Tuple

import psutil
from PIL import Image

from benchmarks.in_process import load_handler, machine_limit
from benchmarks.large_photos import DraftTradeoff, draft_tradeoffs, handle_ms, jpeg_of
from benchmarks.stock_archive import STOCK_NAME, build_stock_archive, captum_installed
from mar_builder.cli import main as build_main
from mar_builder.server.load import Load, Shot, percentile, photo_shots
from mar_builder.server.local_server import LocalTorchServe, TorchServeClient

logger = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# handler.jpeg_draft_factor values compared on 12 MP photos: 1/2, 1/4 and 1/8 scale for them, and full.
DRAFT_FACTORS = (4, 2, 1, 0)


@dataclass(frozen=True)
class Row:
    setup: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float  # the load generator's CPU time over the window, as a fraction of one core
    frontend_cpu: float  # TorchServe's frontend (the JVM), likewise
    workers_cpu: float  # the model's worker processes together, likewise
    limit: float = 0.0  # (a) measured right before and right after this row, averaged
    images: int = 1  # photos per request; photos/s counts photos, not requests


def server_cpu_seconds(server: LocalTorchServe) -> Tuple[float, float]:
    """CPU seconds used so far by the server's frontend (the JVM) and by its Python processes (the workers)."""
    frontend = workers = 0.0
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            used, name = sum(process.cpu_times()[:2]), process.name()
        except psutil.NoSuchProcess:
            continue
        if name == "java":
            frontend += used
        else:
            workers += used
    return frontend, workers


def measure(
    server: LocalTorchServe,
    model: str,
    shots: Sequence[Shot],
    clients: int,
    warmup: float,
    seconds: float,
    setup: str,
    images: int = 1,
) -> Row:
    """Closed-loop load: `clients` clients back to back; counts what completes inside the window after warm-up."""
    with Load(server.client, model, shots, clients=clients, timeout=120) as load:
        time.sleep(warmup)
        start, cpu_start, server_start = time.monotonic(), time.process_time(), server_cpu_seconds(server)
        time.sleep(seconds)
        end, cpu_end, server_end = time.monotonic(), time.process_time(), server_cpu_seconds(server)
    window = [o for o in load.outcomes() if start <= o.ended <= end]
    latencies = [o.latency * 1000 for o in window if o.status == 200]
    return Row(
        setup,
        clients,
        len(latencies) * images / (end - start),
        percentile(latencies, 50),
        percentile(latencies, 99),
        sum(o.status != 200 for o in window),
        (cpu_end - cpu_start) / (end - start),
        (server_end[0] - server_start[0]) / (end - start),
        (server_end[1] - server_start[1]) / (end - start),
        images=images,
    )


def multi_image_shots(shots: Sequence[Shot], images: int) -> List[Shot]:
    """Requests of `images` photos each, as multipart file parts (curl -F image=@a.jpg -F image=@b.jpg ...)."""
    boundary = "bench-boundary-7f3a"
    requests = []
    for first in range(len(shots)):
        body = b""
        for i in range(images):
            shot = shots[(first + i) % len(shots)]
            body += (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{shot.kind}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n"
                ).encode()
                + shot.body
                + b"\r\n"
            )
        body += f"--{boundary}--\r\n".encode()
        requests.append(Shot(f"{images} photos", body, f"multipart/form-data; boundary={boundary}"))
    return requests


def large_photo_latency(client: TorchServeClient, sizes: Dict[str, List[bytes]], rounds: int) -> dict:
    """p50 latency of 12-megapixel and 600x400 JPEGs of the same photos, sent one at a time, alternating."""
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
    if not args.only_ours and not captum_installed():
        raise SystemExit("error: the stock handler needs captum: run `make bench` (it installs requirements-bench.txt)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    store = workdir / "model_store"
    assert build_main(["build", "--model-store", str(store)]) == 0
    if not args.only_ours:
        build_stock_archive(store)
    with zipfile.ZipFile(store / "classifier.mar") as archive:
        archive.extract("classifier.pt", workdir)
    pt_path = workdir / "classifier.pt"
    shots = photo_shots()
    sample_paths = [Path(__file__).resolve().parent.parent / "samples" / s.kind for s in shots]

    bodies = [s.body for s in shots]
    photos = [Image.open(p) for p in sample_paths]
    large = {"12 MP": [jpeg_of(p, 12) for p in photos], "600x400": [jpeg_of(p, 0.24) for p in photos]}
    handler, context = load_handler(pt_path, {"threads_per_worker": 1})
    tradeoffs: List[DraftTradeoff] = []
    small_ms, latency = 0.0, {}
    if not args.only_ours:
        logger.info("(d) in process: the 12 MP photos at each jpeg_draft_factor")
        tradeoffs = draft_tradeoffs(pt_path, large["12 MP"], DRAFT_FACTORS, args.large_rounds)
        small_ms = handle_ms(handler, context, large["600x400"], args.large_rounds)

    # This shared machine's speed drifts by 10-20 % within minutes: (a) is measured before and after
    # each of our rows, and each row is compared with the mean of the two around it.
    logger.info("(a) in-process limit, %.0f s on one thread", args.limit_seconds)
    limits = [machine_limit(pt_path, bodies, args.limit_seconds)]
    rows: List[Row] = []
    with LocalTorchServe(workdir / "ours", store, overrides=dict(args.set)) as server:
        warm_up(server.client, "classifier", shots, 2 * args.warmup)
        for clients in args.clients:
            logger.info("(b) ours, %d clients", clients)
            row = measure(server, "classifier", shots, clients, args.warmup, args.seconds, "ours")
            logger.info("(a) again")
            limits.append(machine_limit(pt_path, bodies, args.limit_seconds))
            rows.append(replace(row, limit=(limits[-2] + limits[-1]) / 2))
        if args.images_per_request > 1:
            n, clients = args.images_per_request, args.multi_clients
            logger.info("(b) ours, %d clients sending %d photos per request", clients, n)
            multi = multi_image_shots(shots, n)
            row = measure(server, "classifier", multi, clients, args.warmup, args.seconds, "ours", images=n)
            limits.append(machine_limit(pt_path, bodies, args.limit_seconds))
            rows.append(replace(row, limit=(limits[-2] + limits[-1]) / 2))
        if not args.only_ours:
            logger.info("(d) large photos")
            latency = large_photo_latency(server.client, large, args.large_rounds)
    overall = sum(limits) / len(limits)
    if args.only_ours:
        factor = handler.settings.jpeg_draft_factor
        return report(limits, rows, latency, tradeoffs, small_ms, factor, sample_paths, args.set)
    stock = LocalTorchServe(workdir / "stock", store, models=[f"{STOCK_NAME}={STOCK_NAME}.mar"])
    stock.start(wait_for=[STOCK_NAME])
    try:
        warm_up(stock.client, STOCK_NAME, shots, 2 * args.warmup)
        for clients in args.clients:
            logger.info("(c) stock image_classifier, %d clients", clients)
            row = measure(stock, STOCK_NAME, shots, clients, args.warmup, args.seconds, "stock")
            rows.append(replace(row, limit=overall))
    finally:
        stock.stop()
    factor = handler.settings.jpeg_draft_factor
    return report(limits, rows, latency, tradeoffs, small_ms, factor, sample_paths, args.set)


def warm_up(client: TorchServeClient, model: str, shots: Sequence[Shot], seconds: float) -> None:
    """Load that is not measured: the frontend's JIT compiler and the workers' TorchScript profiling settle."""
    logger.info("warming up %s for %.0f s", model, seconds)
    with Load(client, model, shots, clients=4, timeout=120):
        time.sleep(seconds)


def report(
    limits: Sequence[float],
    rows: Sequence[Row],
    large: dict,
    tradeoffs: Sequence[DraftTradeoff],
    small_ms: float,
    default_factor: int,
    photos: Sequence[Path],
    settings: Sequence[Tuple[str, str]] = (),
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
        "| setup | clients | photos/s | p50 ms | p99 ms | errors | CPU (% of a core): load generator, "
        "frontend, workers | vs limit (a) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if settings:  # a lever being measured: the run is not the project's defaults
        lines[1:1] = ["", "Changed for our server in this run: " + ", ".join(f"`{k}={v}`" for k, v in settings)]
    for r in rows:
        setup = r.setup if r.images == 1 else f"{r.setup}, {r.images} photos per request"
        lines.append(
            f"| {setup} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.errors} | "
            f"{100 * r.client_cpu:.0f}, {100 * r.frontend_cpu:.0f}, {100 * r.workers_cpu:.0f} | {r.rps / r.limit:.2f} |"
        )
    ours = {r.clients: r for r in rows if r.setup == "ours" and r.images == 1}
    stock = {r.clients: r for r in rows if r.setup == "stock"}
    lines.append("")
    for clients in sorted(ours):
        o, s = ours[clients], stock.get(clients)
        versus_stock = f"{o.rps / s.rps:.1f}x the stock handler" if s and s.rps else "stock: no answers"
        if not large:
            versus_stock = "stock: not measured (--only-ours)"
        lines.append(
            f"- {clients} clients: (b)/(a) = {o.rps / o.limit:.2f}, p99/p50 = {o.p99_ms / max(o.p50_ms, 1e-9):.1f}, "
            f"(b)/(c) = {versus_stock}"
        )
    for m in (r for r in rows if r.images > 1):
        single = ours.get(m.clients)
        versus_single = f", {m.rps / single.rps:.2f}x one photo per request" if single and single.rps else ""
        lines.append(
            f"- {m.images} photos per request, {m.clients} clients: {m.rps:.1f} photos/s, "
            f"(b)/(a) = {m.rps / m.limit:.2f}{versus_single}"
        )
    if not large:  # --only-ours: no large photos, no stock handler
        return lines
    ratio = large["12 MP"] / large["600x400"]
    lines.append(f"- (d) 12 MP JPEG p50 {large['12 MP']:.0f} ms vs 600x400 p50 {large['600x400']:.0f} ms: {ratio:.2f}x")
    default = next(t for t in tradeoffs if t.factor == default_factor)
    for path, (same_top1, difference, margin, answer) in zip(photos, default.agreement, strict=True):
        verdict = "same as" if same_top1 else "differs from"
        lines.append(
            f"  - {path.name} at 12 MP: top-1 {next(iter(answer))!r} {verdict} a full-resolution decode "
            f"(whose top-1 leads by {margin:.3f}); largest probability difference {difference:.4f}"
        )
    lines.append(
        f"- (d) in process on one thread, the 12 MP photos at each `jpeg_draft_factor`, against the 600x400 "
        f"photos' whole path (decode, preprocess, classify: {small_ms:.0f} ms):"
    )
    for t in tradeoffs:
        lines.append(
            f"  - {t.factor}{' (the default)' if t.factor == default_factor else ''}: decoded at {t.decoded_size} "
            f"in {t.decode_ms:.0f} ms; whole path {t.handle_ms:.0f} ms ({t.handle_ms / small_ms:.1f}x); "
            f"probabilities within {t.difference:.4f} of a full-resolution decode, same top-1 for "
            f"{t.same_top1} of {len(t.agreement)}"
        )
    return lines


def server_setting(text: str) -> Tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


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
        "--set",
        type=server_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config.properties setting for our server, to measure a lever, e.g. vmargs=... (repeatable)",
    )
    parser.add_argument(
        "--large-rounds", type=int, default=5, help="rounds of large vs small photos (default: %(default)s)"
    )
    parser.add_argument(
        "--pt-from-tutorial",
        action="store_true",
        help="instead: serve the tutorial's own .pt of the default network (--pt, and --pt --rebuild) "
        "beside this tool's export, and print the ratios (see benchmarks/tutorial_pt.py)",
    )
    parser.add_argument(
        "--images-per-request",
        type=int,
        default=8,
        help="also measure requests of this many photos (multipart file parts); 1 skips it (default: %(default)s)",
    )
    parser.add_argument(
        "--multi-clients", type=int, default=4, help="clients for the several-photos row (default: %(default)s)"
    )
    parser.add_argument(
        "--only-ours", action="store_true", help="skip the stock handler (c) and the large photos (d): a quick run"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("ts").setLevel(logging.WARNING)  # the in-process handler's per-request metric lines
    if args.pt_from_tutorial:
        from benchmarks.tutorial_pt import compare

        workdir = Path(tempfile.mkdtemp(prefix="bench-tutorial-"))
        print("\n".join(compare(workdir, args.clients, args.warmup, args.seconds)))
        return 0
    lines = run(args)
    print("\n".join(lines))
    RESULTS.write_text("# Latest `make bench`\n\n" + "\n".join(lines) + "\n")
    logger.info("written to %s", RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
