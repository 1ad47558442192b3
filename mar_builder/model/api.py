"""The Python API for notebooks: mar_builder.export and mar_builder.build take the trained objects themselves."""

import copy
import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..constants import DEFAULT_MODEL_NAME, DEFAULT_MODEL_VERSION, DEFAULT_TOPK, REPO_ROOT
from ..errors import ModelSourceError, RecipeError, SettingsError
from .recipe import IMAGENET_RECIPE, Recipe

logger = logging.getLogger(__name__)


def export(
    model: nn.Module,
    class_names: Sequence[str],
    output: str | Path,
    *,
    transforms: Any = None,
    recipe: Recipe | None = None,
    head: str | None = None,
    check_photos: str | Path | None = None,
    trace: bool = False,
) -> Path:
    """Write `model` as a verified, standalone Predictor .pt to `output`, with the checks of `mar-builder export`.

    `model` returns logits (N, outputs) for float images (N, C, h, w); it is copied, not changed. `class_names`
    name its outputs in order. The preprocessing is `transforms` (your eval transform: a torchvision v1/v2
    Compose or nn.Sequential, or timm's create_transform; compiled step by step and checked on photos, those of
    `check_photos` added), or `recipe`, or a timm network's pretrained_cfg, or torchvision's classic ImageNet
    recipe (resize 256, crop 224). `head`: "softmax", "sigmoid", or None (sigmoid for one output, softmax
    otherwise). Returns the path written. Raises an ExportError subclass (nothing is written) saying what to fix.
    """
    from .class_names import validate_class_names
    from .export import export_predictor
    from .predictor import Predictor, count_outputs, default_head
    from .recipe_sources import resolve_recipe, timm_recipe
    from .transform_check import check_recipe, resolve_transform
    from .user_model import check_network_output

    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"model must be a torch nn.Module, got a {type(model).__name__}")
    names = validate_class_names(list(class_names), "class_names")
    if transforms is not None and recipe is not None:
        raise SettingsError("give transforms or recipe, not both: the recipe is compiled from the transforms")
    network = copy.deepcopy(model).cpu().float().eval()
    if transforms is not None:
        transforms = resolve_transform(transforms, "transforms")
        chosen = resolve_recipe(IMAGENET_RECIPE, (), network, transforms=transforms)
        check_recipe(transforms, chosen, "transforms", Path(check_photos) if check_photos is not None else None)
    elif recipe is not None:
        if not isinstance(recipe, Recipe):
            raise SettingsError(f"recipe must be a mar_builder.model.recipe.Recipe, got a {type(recipe).__name__}")
        chosen = recipe
    else:
        chosen = timm_recipe(network) or IMAGENET_RECIPE
        logger.info("preprocessing: %s", chosen.describe())
    try:
        predictor = Predictor(network, names, chosen, head or default_head(count_outputs(network, chosen.output_size)))
    except RecipeError as e:
        raise ModelSourceError(str(e)) from None
    check_network_output(predictor)
    output = Path(output)
    method = export_predictor(predictor, output, trace=trace)
    logger.info("exported %s (inner network %s), verified against eager", output, method)
    return output


def build(
    model: nn.Module,
    class_names: Sequence[str],
    *,
    name: str = DEFAULT_MODEL_NAME,
    version: str = DEFAULT_MODEL_VERSION,
    model_store: str | Path = REPO_ROOT / "model_store",
    topk: int = DEFAULT_TOPK,
    runtime: str | None = None,
    **export_options: Any,
) -> Path:
    """export(), then pack `model_store`/`name`.mar as `mar-builder build` does (the .pt, classify.onnx where the
    runtime allows, and the handler). `export_options` are export()'s keyword arguments. Returns the .mar's path."""
    from ..archive.model_archive import pack_archive
    from ..cli import check_archive_flags
    from .onnx_export import runtime_files

    check_archive_flags(name, version, topk)
    with tempfile.TemporaryDirectory(prefix="mar_builder-") as tmp:
        pt_path = export(model, class_names, Path(tmp) / f"{name}.pt", **export_options)
        chosen, runtime_file = runtime_files(runtime, pt_path, Path(tmp))
        target = pack_archive(pt_path, name, version, Path(model_store), topk, chosen, runtime_file)
    logger.info("wrote %s, classify in %s", target, chosen)
    return target
