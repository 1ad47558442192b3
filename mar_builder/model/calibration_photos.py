"""The user's photos for int8 calibration: found in any folder, decoded upright in RGB, preprocessed by the .pt."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import SettingsError

logger = logging.getLogger(__name__)

# Every second photo (in sorted path order) is held out: the calibration half sets the int8 ranges, the
# held-out half measures top-1 agreement with fp32. Interleaving keeps both halves spread over the classes
# of a DIR/<class>/ tree and of a folder named by class, such as the shared ImageNet sample.
HOLDOUT_EVERY = 2
# Fewer held-out photos than this cannot measure agreement at all (one photo moves it by 10 %).
MIN_PHOTOS_PER_SPLIT = 10
# Below this many held-out photos a log line says how coarse the measured agreement is.
ADVISED_HELD_OUT_PHOTOS = 100


@dataclass(frozen=True)
class CalibrationSplit:
    """The user's photos preprocessed by the .pt, split in two; each crop is float32 (3, crop, crop)."""

    calibration: List[np.ndarray]  # sets the int8 ranges (NNCF's calibration_dataset)
    held_out: List[np.ndarray]  # measures agreement with fp32 (NNCF's validation_dataset), never calibrates
    unreadable: int  # image files skipped because they did not decode


def image_files(folder: Path) -> List[Path]:
    """Every file under `folder` whose suffix Pillow reads as an image, in sorted path order (hidden ones
    aside): a DIR/<class>/ tree, or a flat folder; labels are not needed. Raises SettingsError."""
    if not folder.is_dir():
        raise SettingsError(f"--calibration {folder}: not a folder")
    suffixes = {suffix.lower() for suffix in Image.registered_extensions()}
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    photos = [p for p in files if p.suffix.lower() in suffixes]
    others = [p.name for p in files if p.suffix.lower() not in suffixes]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        logger.info("--calibration: %d files not named as images are left out (%s)", len(others), shown)
    return photos


def decode_upright_rgb(path: Path) -> torch.Tensor:
    """The photo as the handler serves it: EXIF orientation applied, RGB, uint8 (3, H, W).
    Raises OSError or whatever Pillow raises for a damaged file."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return torch.from_numpy(np.asarray(upright).copy()).permute(2, 0, 1)


def check_photo_count(folder: Path, readable: int, unreadable: int | None = None) -> None:
    """Raise SettingsError when `readable` photos are too few for both halves of the split. `unreadable`:
    how many failed to decode (None: not decoded yet, the photos counted by name)."""
    needed = MIN_PHOTOS_PER_SPLIT * HOLDOUT_EVERY
    if readable >= needed:
        return
    if unreadable is None:
        found = f"{readable} files named as images"
    else:
        found = f"{readable} readable photos" + (f" ({unreadable} unreadable skipped)" if unreadable else "")
    raise SettingsError(
        f"--calibration {folder}: {found}; int8 needs at least {needed}, half to calibrate and half held out to "
        "measure agreement with fp32 (a few hundred make the measure finer)"
    )


def load_calibration_split(folder: Path, predictor: torch.jit.ScriptModule) -> CalibrationSplit:
    """Decode every photo under `folder`, preprocess it with `predictor.preprocess` (the .pt's own resize,
    crop and normalization), and split the crops every HOLDOUT_EVERY-th into held-out.

    Unreadable photos are skipped, each with a warning, and counted. Raises SettingsError when fewer
    than MIN_PHOTOS_PER_SPLIT photos would be left on either side.
    """
    files = image_files(folder)
    crops: List[np.ndarray] = []
    unreadable: List[Tuple[str, str]] = []
    for path in files:
        try:
            image = decode_upright_rgb(path)
        except Exception as e:  # Pillow raises many types for damaged files
            unreadable.append((str(path.relative_to(folder)), f"{type(e).__name__}: {e}"))
            continue
        with torch.no_grad():
            crops.append(predictor.preprocess(image).numpy())
    for name, reason in unreadable:
        logger.warning("--calibration: %s is unreadable (%s); skipped", name, reason)
    check_photo_count(folder, len(crops), len(unreadable))
    held_out = crops[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY]
    calibration = [crop for i, crop in enumerate(crops) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    logger.info(
        "--calibration: %d photos (%d unreadable skipped): %d to calibrate, %d held out to measure agreement",
        len(crops),
        len(unreadable),
        len(calibration),
        len(held_out),
    )
    if len(held_out) < ADVISED_HELD_OUT_PHOTOS:
        logger.warning(
            "--calibration: only %d held-out photos: the measured agreement moves in steps of %.1f %%",
            len(held_out),
            100 / len(held_out),
        )
    return CalibrationSplit(calibration, held_out, len(unreadable))
