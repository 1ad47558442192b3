"""Command line: `export` writes a verified Predictor .pt; `build` also packs it into a .mar."""

import argparse
import logging
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .archive import REPO_ROOT, pack_archive
from .constants import DEFAULT_MODEL_NAME, DEFAULT_MODEL_VERSION, DEFAULT_TOPK
from .default_model import imagenet_class_names, load_default_model
from .errors import ExportError
from .export import export_predictor
from .predictor import Predictor

logger = logging.getLogger("mar_builder")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mar_builder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a verified, standalone Predictor .pt")
    export.add_argument("--output", type=Path, required=True, help="where to write the .pt")
    build = commands.add_parser("build", help="export, then pack model_store/<name>.mar")
    build.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model name (default: %(default)s)")
    build.add_argument("--version", default=DEFAULT_MODEL_VERSION, help="model version (default: %(default)s)")
    build.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="labels per answer (default: %(default)s)")
    build.add_argument("--model-store", type=Path, default=REPO_ROOT / "model_store", help="(default: %(default)s)")
    for sub in (export, build):
        sub.add_argument("--verbose", action="store_true", help="show tracebacks")
    return parser


def build_predictor() -> Predictor:
    """The embedded default: EfficientNet-Lite0 with the 1000 ImageNet labels."""
    return Predictor(load_default_model(), imagenet_class_names())


def export_to(output: Path) -> None:
    start = time.perf_counter()
    # The default network cannot be scripted (namedtuple block args), so it is always traced.
    method = export_predictor(build_predictor(), output, trace=True)
    logger.info(
        "exported %s (inner network %s), verified against eager, in %.1f s", output, method, time.perf_counter() - start
    )


def run(args: argparse.Namespace) -> None:
    if args.command == "export":
        export_to(args.output)
        return
    if not NAME_PATTERN.match(args.name):
        raise ExportError(f"--name {args.name!r}: use letters, digits, '_', '-' or '.', starting with a letter")
    if not NAME_PATTERN.match("v" + args.version):
        raise ExportError(f"--version {args.version!r}: use letters, digits, '_', '-' or '.'")
    if args.topk < 1:
        raise ExportError(f"--topk must be at least 1, got {args.topk}")
    with tempfile.TemporaryDirectory(prefix="mar_builder-") as tmp:
        pt_path = Path(tmp) / f"{args.name}.pt"
        export_to(pt_path)
        target = pack_archive(pt_path, args.name, args.version, args.model_store, args.topk)
    logger.info("wrote %s (%.1f MB)", target, target.stat().st_size / 1e6)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        run(args)
    except (ExportError, ValueError, OSError, ImportError) as e:
        if args.verbose:
            logger.exception("failed")
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
