"""--rebuild: a tutorial-style scripted Predictor read back into this tool's own Predictor (network + transforms)."""

import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torchvision.transforms as T

from ..errors import ModelSourceError, RecipeError
from .export import random_images, torchscript_deprecation_acknowledged
from .predictor import Predictor
from .recipe import Recipe
from .scripted_classifier import to_tensor

logger = logging.getLogger(__name__)

# The transforms the tutorial's Predictor holds, in its order, as torchvision names its modules.
TUTORIAL_TRANSFORMS = ("Resize", "CenterCrop", "ConvertImageDtype", "Normalize")
# On the same float input both resize as torchvision does: any larger difference means that the
# module's forward does something the rebuilt Predictor does not.
REBUILD_TOLERANCE = 1e-4


def rebuild_predictor(module: torch.jit.ScriptModule, class_names: Sequence[str], path: Path) -> Predictor:
    """Our Predictor with `module`'s inner network (`model`) and the parameters of its `transforms`
    (Resize, CenterCrop, ConvertImageDtype(float), Normalize(mean, std)) as its Recipe.

    Raises ModelSourceError naming what cannot be read, and when the rebuilt Predictor's
    probabilities differ from `module`'s own by more than REBUILD_TOLERANCE on random images.
    """
    network = getattr(module, "model", None)
    transforms = getattr(module, "transforms", None)
    if not isinstance(network, torch.nn.Module) or not isinstance(transforms, torch.nn.Module):
        raise ModelSourceError(
            f"--rebuild: {path} has no `model` and `transforms` submodules as the tutorial's Predictor has; "
            "drop --rebuild to serve it through its own forward"
        )
    steps = list(transforms.children())
    found = [_name(step) for step in steps]
    if tuple(found) != TUTORIAL_TRANSFORMS:
        raise ModelSourceError(
            f"--rebuild: {path}'s transforms are {', '.join(found) or 'empty'}, not {', '.join(TUTORIAL_TRANSFORMS)}; "
            "drop --rebuild to serve it through its own forward"
        )
    resize, crop, _, normalize = steps  # ConvertImageDtype: the comparison below catches another dtype
    try:
        recipe = Recipe(
            **_resize_fields(resize, path),
            crop=_pair(crop.size),
            mean=_floats(normalize.mean, "mean", path),
            std=_floats(normalize.std, "std", path),
        )
        logger.info("--rebuild: read from %s: %s, its network %s", path, recipe.describe(), _name(network))
        predictor = Predictor(network, class_names, recipe)
    except RecipeError as e:
        raise ModelSourceError(f"--rebuild: {path}: {e}; drop --rebuild") from e
    difference = largest_difference(predictor, module)
    if difference > REBUILD_TOLERANCE:
        raise ModelSourceError(
            f"--rebuild: the rebuilt Predictor's probabilities differ from {path}'s own by up to {difference:.4f} "
            f"(more than {REBUILD_TOLERANCE:g}): its forward does more than the tutorial's; drop --rebuild"
        )
    logger.info(
        "--rebuild: largest probability difference from %s's own forward on random images: %.1e (limit %g)",
        path,
        difference,
        REBUILD_TOLERANCE,
    )
    return predictor


def largest_difference(predictor: Predictor, module: torch.jit.ScriptModule) -> float:
    """The largest probability difference between `predictor` and `module`, both on random images as T.ToTensor()
    gives them (floats in [0, 1]: the Predictor then resizes as torchvision does, as the tutorial's forward does)."""
    differences: List[float] = []
    with torch.no_grad():
        for image in random_images():
            ours, theirs = predictor(to_tensor(image)), module(to_tensor(image))
            differences.append(float((ours - theirs).abs().max()))
    return max(differences)


def _name(module: Any) -> str:
    return str(getattr(module, "original_name", type(module).__name__))


def _resize_fields(resize: Any, path: Path) -> Dict[str, Any]:
    """A scripted torchvision Resize's size, interpolation, antialias and max_size as Recipe fields."""
    size = tuple(int(v) for v in resize.size) if isinstance(resize.size, (list, tuple)) else (int(resize.size),)
    # Reading a scripted enum needs TorchScript to know its class: scripting a Resize registers it.
    with torchscript_deprecation_acknowledged():
        torch.jit.script(T.Resize([1]))
    interpolation = str(getattr(resize.interpolation, "value", resize.interpolation))
    antialias = resize.antialias is not False  # None: torchvision's default, True since 0.17
    return {"resize": size, "interpolation": interpolation, "antialias": antialias, "max_size": resize.max_size}


def _pair(size: Any) -> Tuple[int, int]:
    sides = [int(v) for v in size] if isinstance(size, (list, tuple)) else [int(size)]
    return (sides[0], sides[0]) if len(sides) == 1 else (sides[0], sides[1])


def _floats(values: Any, what: str, path: Path) -> List[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ModelSourceError(f"--rebuild: {path}'s Normalize {what} {values!r} is not a list of numbers") from None
