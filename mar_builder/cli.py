"""Command line: `export` writes a verified Predictor .pt, `build` packs it into a .mar, `validate` measures one."""

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence

from .archive.precision import DEFAULT_MIN_AGREEMENT, FP32, INT8, PRECISIONS, check_min_agreement
from .archive.runtimes import DEFAULT_RUNTIME, ONNXRUNTIME, RUNTIMES, TORCHSCRIPT
from .constants import DEFAULT_MODEL_NAME, DEFAULT_MODEL_VERSION, DEFAULT_TOPK, REPO_ROOT
from .deploy.command import add_deploy_parser, run_deploy
from .errors import ExportError, ServeError, SettingsError, first_line
from .model.model_flags import add_model_flags, pt_class_names, user_model_from_args
from .server import predict_command, server_commands
from .validation.flags import add_validate_flags

# The build side and validate import torch (seconds of CPU): they load inside the commands that use them,
# so that serve, stop, predict and scale start at once.

if TYPE_CHECKING:
    from .model.int8_quantize import Int8Result
    from .model.predictor import Predictor

logger = logging.getLogger("mar_builder")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mar-builder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a verified, standalone Predictor .pt")
    export.add_argument("--output", type=Path, required=True, help="where to write the .pt")
    build = commands.add_parser("build", help="export, then pack model_store/<name>.mar")
    build.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model name (default: %(default)s)")
    build.add_argument("--version", default=DEFAULT_MODEL_VERSION, help="model version (default: %(default)s)")
    build.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="labels per answer (default: %(default)s)")
    build.add_argument("--model-store", type=Path, default=REPO_ROOT / "model_store", help="(default: %(default)s)")
    build.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help=f"what runs the network in the workers: {ONNXRUNTIME} (the .pt's classify exported to classify.onnx, "
        f"packed beside the .pt) or {TORCHSCRIPT} (the .pt alone). Default: {DEFAULT_RUNTIME}, falling back to "
        f"{TORCHSCRIPT} with a log line saying why when a model cannot have it (a --pt classifier served through "
        f"its own forward never can); asked for explicitly, {ONNXRUNTIME} fails instead",
    )
    add_precision_flags(build)
    for sub in (export, build):
        add_model_flags(sub)
        sub.add_argument("--verbose", action="store_true", help="show tracebacks")
    server_commands.add_commands(commands)  # serve, stop, scale, rotate-key
    predict_command.add_command(commands)
    validate = commands.add_parser(
        "validate",
        help="eager vs .pt vs served archive on your labelled photos",
        description="(a) the eager network, (b) the archive's .pt and (c) the archive served by a TorchServe of "
        "its own, on labelled photos: report.html and summary.json; exit 1 below --min-agreement",
    )
    add_validate_flags(validate)
    add_deploy_parser(commands)
    return parser


def add_precision_flags(build: argparse.ArgumentParser) -> None:
    int8 = build.add_argument_group("int8 (docs/int8.md): classify.onnx quantized with NNCF, calibrated on your photos")
    int8.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=FP32,
        help=f"the precision of classify in {ONNXRUNTIME} (default: %(default)s); {INT8} needs --calibration",
    )
    int8.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="your photos, in any folder (labels not needed): every second one calibrates int8, the others are "
        "held out to measure top-1 agreement with fp32",
    )
    int8.add_argument(
        "--min-agreement",
        type=float,
        metavar="FRACTION",
        help="the top-1 agreement with fp32 that int8 must reach on the held-out photos and on all of them, or "
        f"nothing is packed (default: {DEFAULT_MIN_AGREEMENT})",
    )


def check_precision_flags(args: argparse.Namespace) -> None:
    """Refuse what int8 cannot be before anything is exported; raises SettingsError."""
    if args.precision != INT8:
        for flag, value in (("--calibration", args.calibration), ("--min-agreement", args.min_agreement)):
            if value is not None:
                raise SettingsError(f"{flag} goes with --precision int8")
        return
    if args.runtime == TORCHSCRIPT:
        raise SettingsError(f"--precision int8 runs classify in {ONNXRUNTIME}: drop --runtime {TORCHSCRIPT}")
    if args.calibration is None:
        raise SettingsError("--precision int8 needs --calibration DIR: a folder of your photos to calibrate on")
    if args.min_agreement is None:
        args.min_agreement = DEFAULT_MIN_AGREEMENT
    check_min_agreement(args.min_agreement)
    # Counted by name now, decoded after the export: an empty or small folder is refused in a second.
    from .model.calibration_photos import check_photo_count, image_files

    check_photo_count(args.calibration, len(image_files(args.calibration)))


def build_predictor() -> "Predictor":
    """The embedded default: EfficientNet-Lite0 with the 1000 ImageNet labels."""
    from .model.default_model import DEFAULT_RECIPE, imagenet_class_names, load_default_model
    from .model.predictor import Predictor

    return Predictor(load_default_model(), imagenet_class_names(), DEFAULT_RECIPE)


def write_pt(args: argparse.Namespace, output: Path) -> None:
    """Write the verified .pt that the flags describe to `output`; nothing is written on failure."""
    from .model.class_names import log_class_names
    from .model.export import export_predictor
    from .model.oldest_torch import check_loads_on_oldest_torch
    from .model.user_model import build_predictor as build_user_predictor

    start = time.perf_counter()
    user_model = user_model_from_args(args)  # checks the flags first, --pt's and --hf's included
    if args.pt is not None:
        write_from_pt(args.pt, output, args.rebuild, pt_class_names(args))
        return
    if args.hf is not None:
        write_from_hf(args.hf, output, output if args.command == "export" else f"the Predictor of {args.hf}")
        return
    if user_model is None:
        # The default network cannot be scripted (namedtuple block args), so it is always traced.
        predictor, trace = build_predictor(), True
    else:
        predictor, trace = build_user_predictor(user_model), args.trace
    method = export_predictor(predictor, output, trace=trace)
    # The Predictor's own code calls only torch 2.4.0's operators: anything missing is the network's.
    check_loads_on_oldest_torch(output, "the Predictor", "The operators are its network's own")
    log_class_names(predictor.class_names)
    shown = output if args.command == "export" else "the Predictor"  # build's .pt is temporary: not named
    logger.info(
        "exported %s (inner network %s), verified against eager, in %.1f s", shown, method, time.perf_counter() - start
    )


def write_from_hf(folder: Path, output: Path, shown: "Path | str") -> None:
    """--hf: a Hugging Face save_pretrained folder, its network traced (transformers models do not script),
    verified against the eager model like every export."""
    from .model.class_names import log_class_names
    from .model.export import export_predictor
    from .model.hf_folder import build_hf_predictor, quiet_transformers
    from .model.oldest_torch import check_loads_on_oldest_torch

    start = time.perf_counter()
    with quiet_transformers():
        predictor = build_hf_predictor(folder)
        export_predictor(predictor, output, trace=True)
    log_class_names(predictor.class_names)
    seconds = time.perf_counter() - start
    logger.info("exported %s (inner network traced), verified against eager, in %.1f s", shown, seconds)
    check_loads_on_oldest_torch(output, f"the Predictor of {folder}", "The operators are its network's own")


def write_from_pt(pt: Path, output: Path, rebuild: bool, given_names: "List[str] | None" = None) -> None:
    """--pt: our own Predictor is copied as it is; any other scripted classifier is wrapped so that the
    handler serves it through its own forward, or with --rebuild exported as our Predictor.
    `given_names` (--classes) stand in for the class_names of a module that has none."""
    from .model.class_names import log_class_names
    from .model.export import export_predictor
    from .model.model_sources import check_exported_pt, is_exported_predictor, load_pt
    from .model.oldest_torch import check_loads_on_oldest_torch
    from .model.rebuild import rebuild_predictor
    from .model.scripted_classifier import check_scripted_classifier, export_adapter

    module = load_pt(pt)
    if is_exported_predictor(module):
        if rebuild:
            raise SettingsError(f"--rebuild: {pt} is already a Predictor exported by this tool; drop --rebuild")
        if given_names is not None:
            raise SettingsError(f"--pt: {pt} is a Predictor of this tool, with class names of its own; drop --classes")
        class_names = check_exported_pt(pt, module)
        log_class_names(class_names)
        _copy_atomically(pt, output)
        logger.info("%s is a working Predictor with %d classes; used as it is", pt, len(class_names))
        # A Predictor of an earlier mar-builder called F.interpolate, whose scripted code torch 2.4.0 cannot load.
        check_loads_on_oldest_torch(output, str(pt), "Export it again from its network with this mar-builder")
        return
    class_names = check_scripted_classifier(module, pt, given_names)
    log_class_names(class_names)
    if rebuild:
        method = export_predictor(rebuild_predictor(module, class_names, pt), output)
        logger.info("rebuilt %s as this tool's Predictor (inner network %s), verified against eager", pt, method)
        check_loads_on_oldest_torch(output, "the rebuilt Predictor", "The operators are its network's own")
        return
    export_adapter(module, class_names, output)
    # --rebuild reads a tutorial-style Predictor: suggested only where its parts are there to read.
    tutorial_style = hasattr(module, "model") and hasattr(module, "transforms")
    hint = " (--rebuild exports it as this tool's Predictor, batched)" if tutorial_style else ""
    rebuild_hint = "--rebuild exports it as this tool's Predictor, which loads there" if tutorial_style else ""
    check_loads_on_oldest_torch(output, f"the .pt wrapped around {pt}", rebuild_hint)
    logger.info("%s is not a Predictor of this tool: served through its own forward, one image at a time%s", pt, hint)


def run(args: argparse.Namespace) -> int:
    if "run" in args:  # a server command
        args.run(args)
        return 0
    if args.command == "validate":
        from .validation.command import run_validate

        return run_validate(args)
    if args.command == "export":
        write_pt(args, args.output)
        return 0
    if args.command == "deploy":
        run_deploy(args)
        return 0
    check_archive_flags(args.name, args.version, args.topk)
    check_precision_flags(args)
    from .archive.model_archive import pack_archive
    from .model.onnx_export import runtime_files

    with tempfile.TemporaryDirectory(prefix="mar_builder-") as tmp:
        pt_path = Path(tmp) / f"{args.name}.pt"
        write_pt(args, pt_path)
        if args.precision == INT8:
            runtime, runtime_file = runtime_files(ONNXRUNTIME, pt_path, Path(tmp), flag="--precision int8")
            int8 = build_int8(args, pt_path, runtime_file, Path(tmp) / INT8)
            runtime_file = int8.path
        else:
            runtime, runtime_file = runtime_files(args.runtime, pt_path, Path(tmp))
            int8 = None
        target = pack_archive(
            pt_path, args.name, args.version, args.model_store, args.topk, runtime, runtime_file, int8
        )
    precision = f", {INT8}" if int8 is not None else ""
    logger.info("wrote %s (%.1f MB), classify in %s%s", target, target.stat().st_size / 1e6, runtime, precision)
    return 0


def build_int8(args: argparse.Namespace, pt_path: Path, fp32_onnx: "Path | None", folder: Path) -> "Int8Result":
    """The int8 classify.onnx in `folder`, calibrated and measured on --calibration; raises ExportError."""
    import torch

    from .model.calibration_photos import load_calibration_split
    from .model.export import torchscript_deprecation_acknowledged
    from .model.int8_quantize import quantize_classify

    assert fp32_onnx is not None  # runtime_files gives classify.onnx for onnxruntime, or raises
    with torchscript_deprecation_acknowledged():
        predictor = torch.jit.load(str(pt_path), map_location="cpu").eval()
    split = load_calibration_split(args.calibration, predictor)
    folder.mkdir()
    return quantize_classify(fp32_onnx, split, args.min_agreement, folder / fp32_onnx.name)


def check_archive_flags(name: str, version: str, topk: int) -> None:
    """--name, --version and --topk as TorchServe takes them; SettingsError otherwise."""
    if not NAME_PATTERN.match(name):
        raise SettingsError(f"--name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter")
    if not NAME_PATTERN.match("v" + version):
        raise SettingsError(f"--version {version!r}: use letters, digits, '_', '-' or '.'")
    if topk < 1:
        raise SettingsError(f"--topk must be at least 1, got {topk}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        code = run(args)
    except Exception as e:
        if args.verbose:
            logger.exception("failed")
        print(f"error: {_one_line(e, args.verbose)}", file=sys.stderr)
        return 1
    return code


def _one_line(error: Exception, verbose: bool) -> str:
    """Our own errors say what to fix in one line; anything else is named by its type and first line."""
    if isinstance(error, (ExportError, ServeError)):
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
