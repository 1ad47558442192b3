"""Command line: `export` writes a verified Predictor .pt; `build` also packs it into a .mar."""

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .archive import REPO_ROOT, pack_archive
from .constants import DEFAULT_MODEL_NAME, DEFAULT_MODEL_VERSION, DEFAULT_TOPK
from .default_model import imagenet_class_names, load_default_model
from .deploy import add_deploy_parser, run_deploy
from .errors import ExportError, SettingsError, first_line
from .export import export_predictor
from .model_flags import add_model_flags, user_model_from_args
from .model_sources import check_exported_pt
from .predictor import Predictor
from .user_model import build_predictor as build_user_predictor

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
        add_model_flags(sub)
        sub.add_argument("--verbose", action="store_true", help="show tracebacks")
    add_deploy_parser(commands)
    return parser


def build_predictor() -> Predictor:
    """The embedded default: EfficientNet-Lite0 with the 1000 ImageNet labels."""
    return Predictor(load_default_model(), imagenet_class_names())


def write_pt(args: argparse.Namespace, output: Path) -> None:
    """Write the verified .pt that the flags describe to `output`; nothing is written on failure."""
    start = time.perf_counter()
    user_model = user_model_from_args(args)  # checks the flags first, --pt's included
    if args.pt is not None:
        class_names = check_exported_pt(args.pt)
        _copy_atomically(args.pt, output)
        logger.info("%s is a working Predictor with %d classes; used as it is", args.pt, len(class_names))
        return
    if user_model is None:
        # The default network cannot be scripted (namedtuple block args), so it is always traced.
        predictor, trace = build_predictor(), True
    else:
        predictor, trace = build_user_predictor(user_model), args.trace
    method = export_predictor(predictor, output, trace=trace)
    logger.info(
        "exported %s (inner network %s), verified against eager, in %.1f s", output, method, time.perf_counter() - start
    )


def run(args: argparse.Namespace) -> None:
    if args.command == "export":
        write_pt(args, args.output)
        return
    if args.command == "deploy":
        run_deploy(args)
        return
    if not NAME_PATTERN.match(args.name):
        raise SettingsError(f"--name {args.name!r}: use letters, digits, '_', '-' or '.', starting with a letter")
    if not NAME_PATTERN.match("v" + args.version):
        raise SettingsError(f"--version {args.version!r}: use letters, digits, '_', '-' or '.'")
    if args.topk < 1:
        raise SettingsError(f"--topk must be at least 1, got {args.topk}")
    with tempfile.TemporaryDirectory(prefix="mar_builder-") as tmp:
        pt_path = Path(tmp) / f"{args.name}.pt"
        write_pt(args, pt_path)
        target = pack_archive(pt_path, args.name, args.version, args.model_store, args.topk)
    logger.info("wrote %s (%.1f MB)", target, target.stat().st_size / 1e6)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        run(args)
    except Exception as e:
        if args.verbose:
            logger.exception("failed")
        print(f"error: {_one_line(e, args.verbose)}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: Exception, verbose: bool) -> str:
    """Our own errors say what to fix in one line; anything else is named by its type and first line."""
    if isinstance(error, ExportError):
        return first_line(error)
    return f"{type(error).__name__}: {first_line(error)}" + ("" if verbose else " (--verbose shows the traceback)")


def _copy_atomically(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
