"""Where a model's Recipe comes from: your --transforms, torchvision's weights, timm's pretrained_cfg, or the flags.

Precedence: --transforms is the recipe (a flag that contradicts it is refused); otherwise the model's own recipe
(torchvision's `get_model_weights(NAME).DEFAULT.transforms()` for --arch, a timm network's `pretrained_cfg` in
full) with each flag given replacing its value; otherwise the flags and their defaults. One log line says where
each value came from.
"""

import logging
from dataclasses import replace
from typing import Any, Dict, Tuple

from torch import nn

from ..errors import RecipeError, SettingsError
from .recipe import Recipe
from .transform_recipe import compile_transform

logger = logging.getLogger(__name__)

# The Recipe fields that preprocessing flags set (argparse dest -> flag), shown in messages.
FLAG_NAMES = {
    "mean": "--mean",
    "std": "--std",
    "resize": "--resize",
    "crop": "--crop",
    "interpolation": "--interpolation",
    "channel_order": "--channel-order",
}


def torchvision_recipe(arch: str) -> Recipe:
    """torchvision's eval recipe for `arch`'s DEFAULT weights, read from the transforms preset it ships
    (weights.transforms(): its resize, crop, interpolation, antialias, mean and std); nothing is downloaded."""
    import torchvision.models

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except Exception as e:
        raise SettingsError(f"--arch {arch}: torchvision has no weights to read a recipe from ({e})") from e
    return compile_transform(weights.transforms(), f"torchvision's {weights} transforms")


def timm_recipe(network: nn.Module) -> Recipe | None:
    """timm's eval recipe for a network with a `pretrained_cfg`, built by timm itself (resolve_data_config,
    create_transform: interpolation, crop_mode, crop_pct, input_size, mean, std) and compiled; None without one."""
    if not isinstance(getattr(network, "pretrained_cfg", None), dict):
        return None
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=network)
    try:
        recipe = compile_transform(create_transform(**config, is_training=False), "timm's pretrained_cfg transform")
    except RecipeError as e:
        raise RecipeError(f"{e}; or give the recipe yourself: --no-weights-recipe with the flags") from None
    # timm's Normalize holds float32 tensors: the config's own numbers, not their float32 roundings.
    return replace(recipe, mean=tuple(float(v) for v in config["mean"]), std=tuple(float(v) for v in config["std"]))


def resolve_recipe(
    flags_recipe: Recipe,
    given: Tuple[str, ...],
    network: nn.Module,
    arch: str | None = None,
    weights_recipe: bool = True,
    transforms: Any = None,
) -> Recipe:
    """The Recipe to serve with (see the module's docstring). `flags_recipe` holds the flags' values (defaults
    where not `given`). Raises RecipeError for a transform that cannot be compiled or a flag that contradicts it."""
    if transforms is not None:
        recipe = compile_transform(transforms, "--transforms")
        contradicting = [
            f"{FLAG_NAMES[name]} ({_shown(getattr(flags_recipe, name))} against the transform's "
            f"{_shown(getattr(recipe, name))})"
            for name in given
            if getattr(flags_recipe, name) != getattr(recipe, name)
        ]
        if contradicting:
            raise RecipeError(f"--transforms contradicts {', '.join(contradicting)}: drop the flag")
        sources = {name: "--transforms" for name in FLAG_NAMES}
    else:
        own, source = None, ""
        if arch is not None and weights_recipe:
            own, source = torchvision_recipe(arch), f"torchvision's {arch} weights"
        elif weights_recipe:
            own, source = timm_recipe(network), "timm pretrained_cfg"
        recipe = flags_recipe if own is None else replace(own, **_given_fields(flags_recipe, given))
        default = source if own is not None else "default"
        sources = {name: "flag" if name in given else default for name in FLAG_NAMES}
        check_crop_fits(recipe, sources)
    logger.info(
        "preprocessing: %s (%s)",
        recipe.describe(),
        ", ".join(f"{name}: {source}" for name, source in sources.items()),
    )
    return recipe


def check_crop_fits(recipe: Recipe, sources: Dict[str, str]) -> None:
    """A square crop larger than the shorter side's resize would be padded with black: SettingsError, saying
    which of the two was a flag and where the other came from."""
    if len(recipe.resize) != 1 or recipe.crop is None or max(recipe.crop) <= recipe.resize[0]:
        return
    crop, resize = max(recipe.crop), recipe.resize[0]
    message = f"--crop {crop} is larger than --resize {resize}"
    if (sources["resize"] == "flag") != (sources["crop"] == "flag"):
        given, other = ("resize", "crop") if sources["resize"] == "flag" else ("crop", "resize")
        raise SettingsError(
            f"{message}; you gave --{given} only, so pass --{other} too (--{other} "
            f"{crop if other == 'crop' else resize} came from the {sources[other]} recipe)"
        )
    raise SettingsError(f"{message}: the centre crop must fit inside the resized image")


def _given_fields(recipe: Recipe, given: Tuple[str, ...]) -> Dict[str, Any]:
    return {name: getattr(recipe, name) for name in given}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)
