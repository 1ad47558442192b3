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
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import yaml
from PIL import Image

from benchmarks.cpu_features import cpu_features
from benchmarks.in_process import STAGES, Limit, answers_of, extract_archive, load_handler, machine_limit
from benchmarks.large_photos import DraftTradeoff, draft_tradeoffs, handle_ms, jpeg_of, median_ms
from benchmarks.served import Row, measure, warm_up
from benchmarks.stock_archive import STOCK_NAME, build_stock_archive, captum_installed
from mar_builder.cli import main as build_main
from mar_builder.server.load import Shot, percentile, photo_shots
from mar_builder.server.local_server import LocalTorchServe, TorchServeClient

logger = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# handler.jpeg_draft_factor values compared on 12 MP photos: 1/2, 1/4 and 1/8 scale for them, and full.
DRAFT_FACTORS = (4, 2, 1, 0)


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


def large_photo_latency(client: TorchServeClient, model: str, sizes: Dict[str, List[bytes]], rounds: int) -> dict:
    """p50 latency of 12-megapixel and 600x400 JPEGs of the same photos, sent one at a time, alternating."""
    latencies = {name: [] for name in sizes}
    for i in range(rounds + 1):
        for name, jpegs in sizes.items():
            for jpeg in jpegs:
                start = time.monotonic()
                response = client.predict(model, jpeg)
                assert response.status == 200, response.body[:200]
                if i:  # the first round warms up
                    latencies[name].append((time.monotonic() - start) * 1000)
    return {name: percentile(values, 50) for name, values in latencies.items()}


# The archives measured, by runtime: the default first. Each is served alone, by a TorchServe of its own.
# INT8 is the default runtime's classify.onnx quantized on --calibration photos (build --precision int8).
INT8 = "onnxruntime-int8"
ARCHIVES = {"onnxruntime": "classifier", "torchscript": "classifier_torchscript", INT8: "classifier_int8"}
# Where --calibration looks by default: the shared ImageNet sample beside this checkout, when there is one.
DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent.parent / "shared" / "imagenet-sample"
# The .pt as the workers ran it before oneDNN fusion and the malloc thresholds came in: the in-process
# limit that serving is compared with ("what was possible in process before").
BEFORE = "torchscript before"
LIMIT_SETUPS = {
    BEFORE: ("torchscript", {"onednn_fusion": False, "keep_freed_buffers": False}),
    "torchscript, oneDNN fusion only": ("torchscript", {"keep_freed_buffers": False}),
    "torchscript": ("torchscript", {}),
    "onnxruntime": ("onnxruntime", {}),
    INT8: (INT8, {}),
}
# The .pt on TorchServe 0.12.0's official image stack (make image-venv; docs/images.md): its Python 3.9, torch
# 2.4.0 and Pillow, no simplejpeg; measured where .venv-image is installed, with the same archive and settings.
IMAGE_STACK = "torchscript, image stack (torch 2.4.0)"
IMAGE_PYTHON = Path(__file__).resolve().parent.parent / ".venv-image" / "bin" / "python"


def build_archives(
    store: Path, runtimes: Sequence[str], handler_settings: Dict[str, object], calibration: Path | None
) -> List[str]:
    """Each runtime's archive of the default model; `handler_settings` rewrite their model-config.yaml.
    Returns the runtimes built: an int8 build refused (its agreement below the target) is left out, with
    a warning, and the error line above it says what it reached."""
    from mar_builder.validation.mar_files import copy_with_handler_settings, read_manifest

    built = []
    for runtime in runtimes:
        name = ARCHIVES[runtime]
        if runtime == INT8:
            flags = ["--precision", "int8", "--calibration", str(calibration)]
        else:
            flags = ["--runtime", runtime]
        code = build_main(["build", "--model-store", str(store), "--name", name, *flags])
        if code != 0 and runtime == INT8:
            logger.warning("the %s archive was not built (see the error above): its rows are left out", INT8)
            continue
        assert code == 0, f"the {runtime} archive could not be built"
        built.append(runtime)
        if handler_settings:
            mar = store / f"{name}.mar"
            changed = copy_with_handler_settings(mar, read_manifest(mar), handler_settings, store / "changed")
            changed.replace(mar)
    return built


def run(args: argparse.Namespace) -> List[str]:
    if not args.only_ours and not captum_installed():
        raise SystemExit("error: the stock handler needs captum: run `make bench` (it installs requirements-bench.txt)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    store = workdir / "model_store"
    (store / "changed").mkdir(parents=True)
    runtimes = [r for r in ARCHIVES if r in args.runtimes]
    if INT8 in runtimes and args.calibration is None:
        logger.warning("no --calibration photos (nor %s): the %s rows are left out", DEFAULT_CALIBRATION, INT8)
        runtimes.remove(INT8)
    built = [r for r in ARCHIVES if r in runtimes or r == "torchscript"]  # the .pt's archive gives BEFORE's limit
    logger.info("CPU: %s", cpu_features())
    built = build_archives(store, built, dict(args.handler_setting), args.calibration)
    runtimes = [r for r in runtimes if r in built]
    if not runtimes:
        raise SystemExit(f"error: no archive to measure: {', '.join(args.runtimes)} could not be built")
    if not args.only_ours:
        build_stock_archive(store)
    pts = {r: extract_archive(store / f"{ARCHIVES[r]}.mar", workdir / ARCHIVES[r]) for r in built}
    shots = photo_shots()
    sample_paths = [Path(__file__).resolve().parent.parent / "samples" / s.kind for s in shots]
    photos = [Image.open(p) for p in sample_paths]
    large = {"12 MP": [jpeg_of(p, 12) for p in photos], "600x400": [jpeg_of(p, 0.24) for p in photos]}
    default_pt = pts[runtimes[0]]
    handler, context = load_handler(default_pt, {"threads_per_worker": 1})
    tradeoffs: List[DraftTradeoff] = []
    small_ms, floor_ms, latency = 0.0, 0.0, {}
    if not args.only_ours:
        logger.info("(d) in process: the 12 MP photos at each jpeg_draft_factor")
        tradeoffs = draft_tradeoffs(default_pt, large["12 MP"], DRAFT_FACTORS, args.large_rounds)
        small_ms = handle_ms(handler, context, large["600x400"], args.large_rounds)
        floor_ms = eighth_scale_decode_ms(large["12 MP"], args.large_rounds)

    # This shared machine's speed drifts by 10-20 % within minutes: every in-process limit is measured
    # before and after each runtime's rows, and each row is compared with the mean of the two around it.
    setups = {key: (pts[runtime], overrides) for key, (runtime, overrides) in LIMIT_SETUPS.items() if runtime in pts}
    pythons = {key: sys.executable for key in setups}
    if IMAGE_PYTHON.exists():
        setups[IMAGE_STACK], pythons[IMAGE_STACK] = (pts["torchscript"], {}), str(IMAGE_PYTHON)
    else:
        logger.info("no %s (make image-venv): the image stack's limit is left out", IMAGE_PYTHON.parent.parent)
    limits: Dict[str, List[Limit]] = {key: [] for key in setups}

    def measure_limits() -> None:
        for key, (pt, overrides) in setups.items():
            logger.info("(a) in-process limit of %s, %.0f s on one thread", key, args.limit_seconds)
            settings = {**dict(args.handler_setting), **overrides}
            limits[key].append(machine_limit(pt, args.limit_seconds, settings, python=pythons[key]))

    measure_limits()
    rows: List[Row] = []
    for runtime in runtimes:
        name = ARCHIVES[runtime]
        block: List[Row] = []
        with LocalTorchServe(
            workdir / runtime, store, models=(f"{name}={name}.mar",), overrides=dict(args.set)
        ) as server:
            warm_up(server.client, name, shots, 2 * args.warmup)
            for clients in args.clients:
                logger.info("(b) %s, %d clients", runtime, clients)
                block.append(measure(server, name, shots, clients, args.warmup, args.seconds, runtime))
            if args.images_per_request > 1 and runtime == runtimes[0]:
                n, clients = args.images_per_request, args.multi_clients
                logger.info("(b) %s, %d clients sending %d photos per request", runtime, clients, n)
                multi = multi_image_shots(shots, n)
                block.append(measure(server, name, multi, clients, args.warmup, args.seconds, runtime, images=n))
            if not args.only_ours and runtime == runtimes[0]:
                logger.info("(d) large photos")
                latency = large_photo_latency(server.client, name, large, args.large_rounds)
        measure_limits()
        around = {key: mean_rate(measured[-2:]) for key, measured in limits.items()}
        rows += [replace(r, limit=around[runtime], baseline=around.get(BEFORE, 0.0)) for r in block]
    if not args.only_ours:
        before = mean_rate(limits[BEFORE]) if BEFORE in limits else 0.0
        with LocalTorchServe(workdir / "stock", store, models=[f"{STOCK_NAME}={STOCK_NAME}.mar"]) as stock:
            warm_up(stock.client, STOCK_NAME, shots, 2 * args.warmup)
            for clients in args.clients:
                logger.info("(c) stock image_classifier, %d clients", clients)
                row = measure(stock, STOCK_NAME, shots, clients, args.warmup, args.seconds, "stock")
                rows.append(replace(row, limit=before, baseline=before))
    large_photos = LargePhotos(latency, tradeoffs, small_ms, floor_ms, handler.settings.jpeg_draft_factor)
    lines = report(limits, rows, large_photos, sample_paths, args.set, args.handler_setting)
    if INT8 in args.runtimes and INT8 not in runtimes:
        lines += ["", f"- {INT8}: not measured (no --calibration photos, or its build was refused: see the log)"]
    if args.agreement_photos is not None:
        lines += agreement_lines(pts, args.agreement_photos)
    return lines


def agreement_lines(pts: Dict[str, Path], photos: Path) -> List[str]:
    """Each runtime's answers against the .pt's (runtime torchscript) on the same photos and handler path."""
    logger.info("answers of each runtime on the photos under %s", photos)
    answers = {runtime: answers_of(pt, photos) for runtime, pt in pts.items()}
    reference = answers["torchscript"]
    lines = ["", f"Answers on the {len(reference)} photos under {photos}, against runtime torchscript (the .pt):", ""]
    for runtime, found in answers.items():
        if runtime == "torchscript":
            continue
        same = sum(next(iter(found[name])) == next(iter(reference[name])) for name in reference)
        difference = max(
            abs(p - reference[name][label])
            for name in reference
            for label, p in found[name].items()
            if label in reference[name]
        )
        lines.append(
            f"- {runtime}: the same top-1 on {same} of {len(reference)}; top-5 probabilities within {difference:.2e}"
        )
    return lines


def int8_lines(single: Sequence[Row]) -> List[str]:
    """The int8 archive against the default (fp32) archive at each number of clients, measured in this run."""
    fp32 = {r.clients: r for r in single if r.setup == "onnxruntime"}
    return [
        f"- {INT8} against onnxruntime (fp32), {r.clients} clients: {r.rps / fp32[r.clients].rps:.2f}x the photos/s, "
        f"p50 {r.p50_ms:.0f} against {fp32[r.clients].p50_ms:.0f} ms, p99/p50 {r.p99_ms / max(r.p50_ms, 1e-9):.1f}"
        for r in single
        if r.setup == INT8 and r.clients in fp32 and fp32[r.clients].rps
    ]


def mean_rate(measured: Sequence[Limit]) -> float:
    return sum(m.photos_per_second for m in measured) / len(measured)


def eighth_scale_decode_ms(jpegs: Sequence[bytes], rounds: int) -> float:
    """The decode floor of a large JPEG: the handler's decode at 1/8 scale, the smallest libjpeg offers
    (entropy decoding is serial and does not shrink with the scale), median over photos and rounds."""
    from image_decoding import decode_image

    return statistics.median(median_ms(lambda j=jpeg: decode_image(j, min_side=1), rounds) for jpeg in jpegs)


@dataclass(frozen=True)
class LargePhotos:
    latency: Dict[str, float]  # served p50 ms of the 12 MP and 600x400 JPEGs; empty with --only-ours
    tradeoffs: Sequence[DraftTradeoff]
    small_ms: float  # the 600x400 photos' whole path in process, one thread
    floor_ms: float  # eighth_scale_decode_ms of the 12 MP photos
    default_factor: int


def report(
    limits: Dict[str, List[Limit]],
    rows: Sequence[Row],
    large_photos: LargePhotos,
    photos: Sequence[Path],
    settings: Sequence[Tuple[str, str]] = (),
    handler_settings: Sequence[Tuple[str, object]] = (),
) -> List[str]:
    cores = os.cpu_count() or 1
    lines = [
        f"Machine: {cores} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; photos: {', '.join(p.name for p in photos)}.",
        "",
        f"CPU: {cpu_features()}.",
        "",
    ]
    changed = [f"`{k}={v}`" for k, v in settings] + [f"`handler.{k}: {v}`" for k, v in handler_settings]
    if changed:  # a lever being measured: the run is not the project's defaults
        lines += ["Changed for our servers in this run: " + ", ".join(changed), ""]
    lines += [
        f"(a) in-process limits, photos/s: one thread's rate x {cores} cores, each runtime in a process of its own, "
        "measured before the first runtime's rows and after each runtime's rows; the stages are ms per photo on "
        "one thread (classify includes the top-k); explain is one photo's explanation on top of its prediction "
        "(/explanations: gradients through a plain copy of the .pt).",
        "",
        "| runtime | (a) photos/s, mean | measured | decode ms | preprocess ms | classify ms | explain ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, measured in limits.items():
        stages = {stage: statistics.mean(m.stages[stage] for m in measured) for stage in STAGES}
        lines.append(
            f"| {key} | {mean_rate(measured):.1f} | {', '.join(f'{m.photos_per_second:.1f}' for m in measured)} | "
            + " | ".join(f"{stages[stage]:.1f}" for stage in STAGES)
            + f" | {statistics.mean(m.explain_ms for m in measured):.0f} |"
        )
    lines += [
        "",
        "| setup | clients | photos/s | p50 ms | p99 ms | errors | CPU (% of a core): load generator, "
        f"frontend, workers | vs its runtime's (a) | vs (a) of {BEFORE} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        setup = r.setup if r.images == 1 else f"{r.setup}, {r.images} photos per request"
        own = f"{r.rps / r.limit:.2f}" if r.setup != "stock" else ""
        lines.append(
            f"| {setup} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.errors} | "
            f"{100 * r.client_cpu:.0f}, {100 * r.frontend_cpu:.0f}, {100 * r.workers_cpu:.0f} | {own} | "
            f"{r.rps / r.baseline:.2f} |"
        )
    lines.append("")
    single = [r for r in rows if r.images == 1 and r.setup != "stock"]
    stock = {r.clients: r for r in rows if r.setup == "stock"}
    for r in single:
        versus_stock = f", {r.rps / stock[r.clients].rps:.1f}x the stock handler" if stock.get(r.clients) else ""
        lines.append(
            f"- {r.setup}, {r.clients} clients: {r.rps / r.baseline:.2f}x the in-process limit of {BEFORE}, "
            f"{r.rps / r.limit:.2f}x its own runtime's, p99/p50 = {r.p99_ms / max(r.p50_ms, 1e-9):.1f}{versus_stock}"
        )
    lines += int8_lines(single)
    for m in (r for r in rows if r.images > 1):
        alone = next((r for r in single if r.setup == m.setup and r.clients == m.clients), None)
        versus_single = f", {m.rps / alone.rps:.2f}x one photo per request" if alone and alone.rps else ""
        lines.append(
            f"- {m.setup}, {m.images} photos per request, {m.clients} clients: {m.rps:.1f} photos/s, "
            f"{m.rps / m.limit:.2f}x its runtime's (a){versus_single}"
        )
    lines += [
        "",
        "Where a photo's time goes, 1 client (in process on one thread; served p50 as the client sees it):",
        "",
    ]
    lines += ["| runtime | decode | preprocess | classify | served p50 | the rest: frontend, IPC, queueing |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in (r for r in single if r.clients == 1):
        stages = {stage: statistics.mean(m.stages[stage] for m in limits[r.setup]) for stage in STAGES}
        rest = r.p50_ms - sum(stages.values())
        lines.append(
            f"| {r.setup} | " + " | ".join(f"{stages[stage]:.1f} ms" for stage in STAGES) + f" | {r.p50_ms:.1f} ms | "
            f"{rest:.1f} ms ({rest / r.p50_ms:.0%}) |"
        )
    return lines + large_photo_lines(large_photos, photos)


def large_photo_lines(large_photos: LargePhotos, photos: Sequence[Path]) -> List[str]:
    large, tradeoffs, small_ms = large_photos.latency, large_photos.tradeoffs, large_photos.small_ms
    if not large:  # --only-ours: no large photos, no stock handler
        return []
    lines = [""]
    ratio = large["12 MP"] / large["600x400"]
    floor = large_photos.floor_ms
    lines.append(f"- (d) 12 MP JPEG p50 {large['12 MP']:.0f} ms vs 600x400 p50 {large['600x400']:.0f} ms: {ratio:.2f}x")
    lines.append(
        f"- (d) 12 MP p50 / (decode floor {floor:.0f} ms, at 1/8 scale in process, + the 600x400 p50): "
        f"{large['12 MP'] / (floor + large['600x400']):.2f}x"
    )
    default = next(t for t in tradeoffs if t.factor == large_photos.default_factor)
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
        default_mark = " (the default)" if t.factor == large_photos.default_factor else ""
        lines.append(
            f"  - {t.factor}{default_mark}: decoded at {t.decoded_size} "
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


def handler_setting(text: str) -> Tuple[str, object]:
    key, value = server_setting(text)
    return key, yaml.safe_load(value)  # true, 2, onnxruntime: as model-config.yaml would hold them


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
    parser.add_argument(
        "--runtimes",
        nargs="+",
        choices=list(ARCHIVES),
        default=list(ARCHIVES),
        help="the runtimes whose archives are served, onnxruntime (the default runtime) first (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=DEFAULT_CALIBRATION if DEFAULT_CALIBRATION.is_dir() else None,
        metavar="DIR",
        help=f"the photos the {INT8} archive is calibrated on (build --calibration); without any, its rows are "
        "left out (default: %(default)s)",
    )
    parser.add_argument(
        "--agreement-photos",
        type=Path,
        help="also compare each runtime's answers with the .pt's on the photos under this folder, "
        "e.g. ../shared/imagenet-sample",
    )
    parser.add_argument(
        "--handler-setting",
        type=handler_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a handler setting of the archives' model-config.yaml, e.g. keep_freed_buffers=false (repeatable)",
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
