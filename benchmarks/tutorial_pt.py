"""`make bench BENCH_ARGS=--pt-from-tutorial`: what serving the tutorial's own .pt costs against this tool's export.

The same network (the default EfficientNet-Lite0, traced as the tutorial's note allows) is served
three ways, one server at a time, under the same closed-loop load: this tool's export; the
tutorial's scripted Predictor through --pt (wrapped: its own forward, one image at a time); and the
same file through --pt --rebuild (this tool's Predictor rebuilt from it). Ours is measured again
at the end, and the ratios use the mean of its two rows, because this shared machine drifts.
"""

import logging
from dataclasses import replace
from pathlib import Path
from typing import List, Sequence

from benchmarks import in_process  # noqa: F401  (puts tests/ on sys.path, for the tutorial's Predictor)
from benchmarks.served import Row, measure, warm_up
from mar_builder.cli import main as build_main
from mar_builder.model.default_model import imagenet_class_names, load_default_model
from mar_builder.server.load import photo_shots
from mar_builder.server.local_server import LocalTorchServe

logger = logging.getLogger("benchmarks")
SETUPS = (("ours", "classifier"), ("tutorial .pt (--pt)", "tutorial"), ("tutorial .pt (--pt --rebuild)", "rebuilt"))


def build_archives(workdir: Path) -> Path:
    """classifier.mar (this tool's export), tutorial.mar and rebuilt.mar (from the tutorial's .pt) in one store."""
    from tutorial_predictor import save_tutorial_pt

    store = workdir / "model_store"
    pt = save_tutorial_pt(
        workdir / "standalone_model.pt", load_default_model(), imagenet_class_names(), scripted_model=False
    )
    assert build_main(["build", "--model-store", str(store)]) == 0
    assert build_main(["build", "--model-store", str(store), "--name", "tutorial", "--pt", str(pt)]) == 0
    assert build_main(["build", "--model-store", str(store), "--name", "rebuilt", "--pt", str(pt), "--rebuild"]) == 0
    return store


def compare(workdir: Path, clients: Sequence[int], warmup: float, seconds: float) -> List[str]:
    store = build_archives(workdir)
    shots = photo_shots()
    rows = []
    for setup, model in (*SETUPS, SETUPS[0]):
        with LocalTorchServe(workdir / f"serve-{len(rows)}", store, models=(f"{model}={model}.mar",)) as server:
            warm_up(server.client, model, shots, 2 * warmup)
            for n in clients:
                logger.info("%s, %d clients", setup, n)
                rows.append(replace(measure(server, model, shots, n, warmup, seconds, setup), limit=1.0))
    lines = [
        "| setup | clients | photos/s | p50 ms | p99 ms | errors | CPU (% of a core): client, frontend, workers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.setup} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.errors} | "
            f"{100 * r.client_cpu:.0f}, {100 * r.frontend_cpu:.0f}, {100 * r.workers_cpu:.0f} |"
        )
    lines.append("")
    for n in clients:
        ours = [r for r in rows if r.setup == "ours" and r.clients == n]
        reference = sum(r.rps for r in ours) / len(ours)
        # Photos per second of the workers' CPU: what one photo costs, less moved by what else the machine runs.
        per_cpu = sum(per_worker_cpu(r) for r in ours) / len(ours)
        for setup, _ in SETUPS[1:]:
            row = next(r for r in rows if r.setup == setup and r.clients == n)
            lines.append(
                f"- {n} clients: {setup} serves {row.rps / reference:.2f}x the photos/s of ours "
                f"(ours {', '.join(f'{r.rps:.1f}' for r in ours)}), p50 {row.p50_ms:.0f} ms; "
                f"per second of worker CPU {per_worker_cpu(row):.1f} photos against ours {per_cpu:.1f}: "
                f"{per_worker_cpu(row) / per_cpu:.2f}x"
            )
    return lines


def per_worker_cpu(row: Row) -> float:
    return row.rps / row.workers_cpu if row.workers_cpu else 0.0
