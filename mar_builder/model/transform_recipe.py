"""The user's own eval transform (torchvision v1/v2, timm, torchvision's weight presets) compiled into a Recipe.

Each step is read, in order, into the Recipe's fields; a step with no exact equivalent in the Predictor is
refused by name (RecipeError), saying what to pass instead. The transform is read the way training applied it:
to PIL images (ImageFolder's loader), where resizing always antialiases and NEAREST is torch's nearest-exact.
"""

import logging
from typing import Any, Dict, List, Tuple

from ..errors import RecipeError
from .recipe import Recipe

logger = logging.getLogger(__name__)

# PIL's resampling constants, which torchvision accepts in place of an InterpolationMode.
PIL_INTERPOLATIONS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Steps that do nothing to a PIL RGB image's pixels.
NO_OP_STEPS = ("Identity", "ToPureTensor", "RGB", "ConvertImageDtypeToUint8")
SUPPORTED = (
    "Resize, CenterCrop, Grayscale, ToTensor, PILToTensor + ConvertImageDtype(float32), ToImage + "
    "ToDtype(float32, scale=True), Normalize (torchvision v1 and v2), timm's MaybeToTensor, torchvision's "
    "weights.transforms() presets"
)
EVAL_HINT = (
    "pass your eval transform (the tutorial's testval_transforms: Resize, CenterCrop, ToTensor, Normalize), "
    "not the training one"
)


def flatten_steps(transform: Any) -> List[Any]:
    """The steps of a Compose (v1 or v2), an nn.Sequential, or a single step, nested ones flattened."""
    import torch

    if isinstance(transform, torch.nn.Sequential):
        children = list(transform.children())
    elif type(transform).__name__ == "Compose" and isinstance(getattr(transform, "transforms", None), (list, tuple)):
        children = list(transform.transforms)
    else:
        return [transform]
    return [step for child in children for step in flatten_steps(child)]


def compile_transform(transform: Any, source: str = "the transform") -> Recipe:
    """`transform` as a Recipe. Raises RecipeError naming the first step that has no exact equivalent."""
    fields: Dict[str, Any] = {"resize": (), "crop": None, "mean": None, "std": None}
    seen: List[str] = []
    tensor = False  # whether the image is a tensor yet (after ToTensor): resize then follows tensor rules
    rescale: float | None = None
    for step in flatten_steps(transform):
        name = type(step).__name__
        if name == "ImageClassification":  # torchvision's weights.transforms() preset: one step, all of it
            _forbid_after(seen, name, source)
            fields.update(_preset_fields(step))
            rescale = 1 / 255
            seen += ["Resize", "CenterCrop", "ToTensor", "Normalize"]
            continue
        if name in NO_OP_STEPS:
            continue
        if name.startswith("Random") or name in ("AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix"):
            raise RecipeError(
                f"{source}: {name} is a random augmentation, applied in training only: a served image must get the "
                f"same pixels every time; {EVAL_HINT}"
            )
        if name == "Resize":
            _once(seen, name, source)
            if "CenterCrop" in seen:
                raise RecipeError(f"{source}: Resize after CenterCrop has no equivalent; resize first, then crop")
            fields.update(_resize_fields(step, tensor, source))
        elif name in ("CenterCrop",):
            _once(seen, name, source)
            size = step.size
            sides = [int(size)] if isinstance(size, int) else [int(v) for v in size]
            fields["crop"] = (sides[0], sides[0]) if len(sides) == 1 else (sides[0], sides[1])
        elif name == "Grayscale":
            _once(seen, name, source)
            fields["grayscale"] = int(step.num_output_channels)
            fields["grayscale_first"] = "Resize" not in seen
        elif name in ("ToTensor", "MaybeToTensor"):
            _once_conversion(seen, name, source)
            tensor, rescale = True, 1 / 255
        elif name in ("PILToTensor", "MaybePILToTensor", "ToImage"):
            _once_conversion(seen, name, source)
            tensor, rescale = True, 1.0
        elif name in ("ConvertImageDtype", "ToDtype"):
            rescale = _dtype_rescale(step, name, tensor, rescale, source)
        elif name == "Normalize":
            _once(seen, name, source)
            if not tensor:
                raise RecipeError(f"{source}: Normalize before ToTensor: it works on tensors, put it after ToTensor")
            fields["mean"] = tuple(float(v) for v in _values(step.mean))
            fields["std"] = tuple(float(v) for v in _values(step.std))
        elif name == "Lambda":
            raise RecipeError(
                f"{source}: Lambda runs code that cannot be read into the Predictor; replace it by torchvision steps "
                f"({SUPPORTED}), or pass the recipe as flags (--resize, --crop, --mean, --std, --interpolation)"
            )
        else:
            raise RecipeError(
                f"{source}: {type(step).__module__}.{name} has no exact equivalent in the Predictor; the steps it "
                f"compiles: {SUPPORTED}"
            )
        seen.append(name)
    if rescale is None:
        raise RecipeError(f"{source} never turns the image into a tensor: add ToTensor() (or PILToTensor + ToDtype)")
    fields["rescale"] = rescale
    if fields["crop"] is None and len(fields["resize"]) != 2:
        raise RecipeError(
            f"{source} gives each image its own size (no CenterCrop and no Resize((h, w))); the Predictor batches "
            "images of different sizes: add a CenterCrop"
        )
    return Recipe(**fields)


def _preset_fields(preset: Any) -> Dict[str, Any]:
    crop = [int(v) for v in preset.crop_size]
    fields = _resize_fields(preset, tensor=False, source="torchvision's preset", size=preset.resize_size)
    fields.update(
        crop=(crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1]),
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
    )
    return fields


def _resize_fields(step: Any, tensor: bool, source: str, size: Any = None) -> Dict[str, Any]:
    size = step.size if size is None else size
    sides = (int(size),) if isinstance(size, int) else tuple(int(v) for v in size)
    interpolation = interpolation_name(step.interpolation)
    if interpolation not in ("bilinear", "bicubic", "nearest", "nearest-exact"):
        raise RecipeError(
            f"{source}: Resize with {interpolation} interpolation has no equivalent in the Predictor (bilinear, "
            "bicubic, nearest, nearest-exact)"
        )
    antialias = step.antialias is not False
    if not tensor:
        # On PIL images torchvision calls PIL's resize: it always antialiases, and its NEAREST picks the pixel
        # that torch's nearest-exact picks (torch's nearest floors the coordinate instead).
        if interpolation == "nearest":
            interpolation = "nearest-exact"
        if interpolation in ("bilinear", "bicubic") and not antialias:
            logger.info("%s: Resize(antialias=False) on PIL images antialiases anyway (PIL always does)", source)
        antialias = True
    return {
        "resize": sides,
        "max_size": getattr(step, "max_size", None),
        "interpolation": interpolation,
        "antialias": antialias,
    }


def interpolation_name(value: Any) -> str:
    """An InterpolationMode, a PIL resampling constant or a string as torchvision's mode name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return PIL_INTERPOLATIONS.get(value, str(value))
    return str(getattr(value, "value", value))


def _dtype_rescale(step: Any, name: str, tensor: bool, rescale: float | None, source: str) -> float:
    import torch

    dtype = step.dtype if not isinstance(step.dtype, dict) else step.dtype.get(torch.Tensor, None)
    if not tensor or dtype is not torch.float32:
        raise RecipeError(f"{source}: {name}({dtype}) must follow PILToTensor or ToImage and give torch.float32")
    scale = getattr(step, "scale", True)  # ConvertImageDtype always scales uint8 to [0, 1]
    return (rescale or 1.0) / 255 if scale and rescale == 1.0 else (rescale or 1.0)


def _values(values: Any) -> List[float]:
    return [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def _once(seen: List[str], name: str, source: str) -> None:
    if name in seen:
        raise RecipeError(f"{source}: {name} appears twice; the Predictor has one {name} step")


def _once_conversion(seen: List[str], name: str, source: str) -> None:
    conversions = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor", "ToImage")
    if any(step in conversions for step in seen):
        raise RecipeError(f"{source}: {name} after another conversion to a tensor")


def _forbid_after(seen: List[str], name: str, source: str) -> None:
    if seen:
        raise RecipeError(f"{source}: {name} (a whole eval recipe) after {', '.join(seen)}: pass it alone")


def describe_steps(transform: Any) -> Tuple[str, ...]:
    """The steps' class names, for log lines."""
    return tuple(type(step).__name__ for step in flatten_steps(transform))
