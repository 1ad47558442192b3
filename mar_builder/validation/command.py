"""`validate`: the eager network, the .pt and the served archive on the user's labelled photos, side by side."""

import argparse
import logging
import signal
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ..errors import ValidationError
from .in_process import InProcessModels, eager_network, exif_rotates, load_pt, read_photo, top
from .mar_files import archive_handler_settings, extract_member, read_manifest
from .metrics import REPORTED_TOPK, PhotoAnswers, int8_versus_fp32, summarize
from .photos import BadPhoto, LabelledPhoto, photos_from_csv, photos_from_folder, split_by_label
from .report import results_text, run_description, write_html, write_summary
from .served import ServedArchive

logger = logging.getLogger(__name__)


def run_validate(args: argparse.Namespace) -> int:
    """Measure, write the report, and return the exit status: 0 when the served agreement passes, else 1.

    Raises ValidationError (or another ExportError) when the run cannot happen at all.
    """
    if not 0.0 <= args.min_agreement <= 1.0:
        raise ValidationError(f"--min-agreement is a fraction between 0 and 1 (0.99 = 99 %), got {args.min_agreement}")
    manifest = read_manifest(args.mar)
    out = args.out if args.out is not None else args.mar.resolve().parent / f"{manifest.model_name}-validation"
    if args.labels_csv is not None:
        photos = photos_from_csv(args.data, args.labels_csv, args.label_column)
    else:
        photos = photos_from_folder(args.data)
    with tempfile.TemporaryDirectory(prefix="mar_builder-validate-") as tmp:
        pt, settings = load_pt(extract_member(args.mar, manifest.serialized_file, Path(tmp)))
    known, bad = split_by_label(photos, settings.class_names)
    warn_unknown_labels(bad)
    if not known:
        raise ValidationError(
            f"none of the {len(photos)} photos has a label among the archive's class_names (such as "
            f"{settings.class_names[0]!r}): name the class folders after them, or pick the --label-column"
        )
    user_flags = {k: getattr(args, k) for k in ("arch", "model_file", "model_kwargs", "weights", "allow_pickle")}
    transforms = None
    if args.hf is not None:
        from .hf_reference import hf_reference

        given = ["--default-model"] if args.default_model else []
        given += ["--" + k.replace("_", "-") for k, v in user_flags.items() if v not in (None, False)]
        given += ["--transforms (the folder's own image processor is the reference)"] if args.transforms else []
        if given:
            raise ValidationError(f"--hf names the eager model: drop {', '.join(given)}")
        network, transforms = hf_reference(args.hf, settings)
    else:
        network = eager_network(settings, args.default_model, user_flags)
    if args.hf is not None:
        eager_source = (
            f"the Hugging Face model of --hf {args.hf} with the folder's own image processor (AutoImageProcessor) "
            f"on PIL images, then its {settings.head}"
        )
    elif network is None:
        eager_source = "the network inside the archive's .pt stands in for the eager model (none was given)"
    elif args.default_model:
        eager_source = "the eager EfficientNet-Lite0 of --default-model"
    else:
        eager_source = "the eager network of --arch/--model-file/--weights"
    if args.transforms is not None:
        from ..model.transform_check import load_transform

        transforms = load_transform(args.transforms)
        eager_source += f"; your --transforms {args.transforms} on PIL images, then the archive's {settings.head}"
    elif args.hf is None:
        eager_source += f"; the archive's recipe as torchvision transforms on PIL images, then its {settings.head}"
    models = InProcessModels(pt, settings, network, transforms)
    logger.info("%d photos to measure; starting TorchServe with a copy of %s", len(known), args.mar)
    # SIGTERM (a CI timeout, `kill`) exits through the `with`, so the server is stopped, not orphaned.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with ServedArchive(args.mar, manifest, settings.class_names) as served:
            answers = measure(known, models, served, bad)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not answers:
        raise ValidationError(f"no photo could be read: {len(bad)} skipped (see the messages above)")
    summary = summarize(answers, bad, settings.class_names, args.min_agreement)
    handler_settings = archive_handler_settings(args.mar, manifest)
    runtime = handler_settings.get("runtime", "torchscript")
    summary["precision"] = handler_settings.get("precision", "fp32")
    if summary["precision"] == "int8":
        summary["int8_vs_fp32"] = int8_versus_fp32(answers, handler_settings)
    summary["run"] = run_description(
        args.mar.resolve(),
        str(args.data) + (f" with {args.labels_csv} ({args.label_column})" if args.labels_csv else ""),
        eager_source,
        f"a TorchServe on free loopback ports serving a copy of the archive whose model-config.yaml sets handler "
        f"topk to all {len(settings.class_names)} classes (the user's archive is unchanged), classify in "
        f"{runtime} ({summary['precision']}), each photo's bytes sent as application/octet-stream",
        settings.recipe.describe(),
    )
    summary_path = write_summary(out, summary)
    paths: Dict[str, Path] = {a.name: a.path for a in answers}
    report_path = write_html(out, summary, paths)
    logger.info("results on %d photos:\n%s", summary["photos"], results_text(summary))
    logger.info("wrote %s and %s", report_path, summary_path)
    agreement = summary["agreement_top1"]["served"]
    if not summary["passed"]:
        logger.error("FAIL: served top-1 agreement %.4f is below --min-agreement %.4f", agreement, args.min_agreement)
        return 1
    logger.info("PASS: served top-1 agreement %.4f >= %.4f", agreement, args.min_agreement)
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def warn_unknown_labels(bad: List[BadPhoto]) -> None:
    """One warning per unknown label, however many photos carry it."""
    by_label: Dict[str, List[BadPhoto]] = {}
    for b in bad:
        by_label.setdefault(b.label, []).append(b)
    for group in by_label.values():
        more = f" and {len(group) - 1} more" if len(group) > 1 else ""
        logger.warning("%s%s skipped: %s", group[0].name, more, group[0].message)


def measure(
    known: Sequence[Tuple[LabelledPhoto, int]], models: InProcessModels, served: ServedArchive, bad: List[BadPhoto]
) -> List[PhotoAnswers]:
    """(a), (b) and (c) for each photo, with a progress bar; unreadable photos join `bad`."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    answers = []
    with logging_redirect_tqdm():
        for photo, target in tqdm(known, desc="validate", unit="photo"):
            try:
                data, image = read_photo(photo.path)
            except Exception as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                message = f"{type(e).__name__}: {reason}"
                logger.warning("%s: %s; skipped", photo.name, message)
                bad.append(BadPhoto(photo.name, photo.label, "unreadable", message))
                continue
            eager, exported = models.eager(image), models.exported(image)
            try:
                probabilities = served.classify(data)
                served_top, served_error = top(probabilities, REPORTED_TOPK), None
                served_difference: float | None = float((probabilities - eager).abs().max())
            except ValidationError as e:
                served_top, served_error, served_difference = [], str(e), None
                logger.warning("%s: %s", photo.name, e)
            answers.append(
                PhotoAnswers(
                    name=photo.name,
                    path=photo.path,
                    target=target,
                    eager=top(eager, REPORTED_TOPK),
                    pt=top(exported, REPORTED_TOPK),
                    served=served_top,
                    served_error=served_error,
                    pt_difference=float((exported - eager).abs().max()),
                    served_difference=served_difference,
                    exif_rotated=exif_rotates(data),
                )
            )
    return answers
