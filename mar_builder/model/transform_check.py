"""--transforms FILE.py:NAME: load the user's eval transform, and check its compiled Recipe against it on photos."""

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

import torch

from ..constants import REPO_ROOT
from ..errors import RecipeError, SettingsError, first_line

logger = logging.getLogger(__name__)

# The largest and the mean difference allowed between the user's transform (PIL) and the Predictor's uint8 path,
# in grey levels after rescale and normalize (one level = rescale / std). On the 200 shared ImageNet photos the
# right recipe stays within 3 levels (max) and 0.02 level (mean); bicubic served for bilinear moves the mean by
# 1.5 levels (docs/recipes.md).
MAX_LEVELS = 4.0
MEAN_LEVELS = 0.1
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CARRIED_PHOTOS = REPO_ROOT / "samples"  # what every check runs on, with --check-photos DIR's photos added


def load_transform(spec: str) -> Any:
    """`path/to/file.py:NAME`: a transform object, or a function returning one (called with no arguments).
    Raises SettingsError naming what is wrong: a file that fails to import, a NAME that is not there."""
    from .model_sources import import_spec

    path, module, name = import_spec(spec, "--transforms", "NAME", SettingsError)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if not k.startswith("_") and _looks_like_transform(v))
        hint = f"; transforms it defines: {', '.join(found)}" if found else ""
        raise SettingsError(f"--transforms: {path} defines no {name!r}{hint}")
    return resolve_transform(getattr(module, name), f"--transforms {name}")


def resolve_transform(value: Any, source: str) -> Any:
    """A transform object as it is; a function is called with no arguments and must return one."""
    if inspect.isfunction(value):
        try:
            value = value()
        except Exception as e:
            raise SettingsError(f"{source}(): calling it failed: {type(e).__name__}: {first_line(e)}") from e
    if not callable(value):
        raise SettingsError(f"{source} is a {type(value).__name__}, not a transform (a Compose or nn.Sequential)")
    return value


def _looks_like_transform(value: Any) -> bool:
    return callable(value) and not inspect.ismodule(value) and not inspect.isclass(value)


@dataclass(frozen=True)
class RecipeCheck:
    """How far the Predictor's preprocessing is from the transform's, over `photos` photos."""

    photos: int
    largest: float  # the largest absolute difference of any value, in the output's units
    mean: float  # the mean absolute difference over every photo's values
    grey_level: float  # one grey level in the output's units (rescale / the smallest std)


def check_photos(folder: Path | None) -> List[Path]:
    """The photos every check runs on (samples/), plus those of `folder` (--check-photos)."""
    photos = sorted(p for p in CARRIED_PHOTOS.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if folder is not None:
        if not Path(folder).is_dir():
            raise SettingsError(f"--check-photos: {folder} is not a folder")
        given = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        if not given:
            raise SettingsError(f"--check-photos: {folder} holds no photos ({', '.join(PHOTO_SUFFIXES)})")
        photos += given
    return photos


def compare_on_photos(transform: Any, recipe: Any, photos: Sequence[Path]) -> RecipeCheck:
    """Run `transform` on each photo as a PIL RGB image (as ImageFolder loads it) and the Predictor's steps on
    the same pixels as a uint8 tensor (as the server decodes it). Raises RecipeError when the transform fails
    or an output shape differs."""
    import numpy as np
    from PIL import Image

    from .predictor import RecipeTransform

    steps = RecipeTransform(recipe)
    largest, total, count = 0.0, 0.0, 0
    for path in photos:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        try:
            expected = transform(image)
        except Exception as e:
            raise RecipeError(f"the transform fails on {path.name}: {type(e).__name__}: {first_line(e)}") from e
        if not isinstance(expected, torch.Tensor):
            raise RecipeError(f"the transform returns a {type(expected).__name__} for {path.name}, not a tensor")
        with torch.no_grad():
            got = steps(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        if got.shape != expected.shape:
            raise RecipeError(
                f"the transform gives {path.name} shape {list(expected.shape)}, the compiled recipe {list(got.shape)}"
            )
        difference = (got - expected.float()).abs()
        largest = max(largest, float(difference.max()))
        total, count = total + float(difference.sum()), count + difference.numel()
    grey_level = recipe.rescale / min(recipe.std or (1.0,))
    return RecipeCheck(len(photos), largest, total / max(count, 1), grey_level)


def check_recipe(transform: Any, recipe: Any, source: str, folder: Path | None = None) -> RecipeCheck:
    """compare_on_photos on check_photos(folder), logged; RecipeError above MAX_LEVELS or MEAN_LEVELS."""
    result = compare_on_photos(transform, recipe, check_photos(folder))
    logger.info(
        "%s against the compiled recipe on %d photos: largest difference %.4g (%.2f grey levels), mean %.2g",
        source,
        result.photos,
        result.largest,
        result.largest / result.grey_level,
        result.mean,
    )
    if result.largest > MAX_LEVELS * result.grey_level or result.mean > MEAN_LEVELS * result.grey_level:
        raise RecipeError(
            f"{source} and the Predictor's preprocessing differ on {result.photos} photos by up to "
            f"{result.largest:.4g} (mean {result.mean:.2g}), more than {MAX_LEVELS:g} grey levels ({MEAN_LEVELS:g} "
            "on average): the transform does something the recipe does not; nothing was written"
        )
    return result
