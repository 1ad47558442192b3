"""A Hugging Face image processor, as transformers reads it from preprocessor_config.json -> the Predictor's Recipe,
with the processor's own arithmetic (transformers' TorchvisionBackend, the default AutoImageProcessor backend)."""

import logging
from typing import Any, Callable, Dict, Tuple

from ..errors import ModelSourceError
from .recipe import Recipe

logger = logging.getLogger(__name__)

# preprocessor_config.json's "resample" (PIL's numbering) -> the torchvision InterpolationMode that transformers'
# TorchvisionBackend resizes with (image_utils.pil_torch_interpolation_mapping: PIL NEAREST is NEAREST_EXACT).
RESAMPLE_INTERPOLATIONS = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
# The keys every compiled processor honours: resize, centre crop, rescale, normalize. do_convert_rgb: the handler
# always decodes to RGB; default_to_square is already resolved into `size` when transformers reads the file.
HONOURED_KEYS = frozenset(
    ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor")
    + ("do_normalize", "image_mean", "image_std", "do_convert_rgb", "default_to_square")
)
# Keys that do not change one image's pixel values: output layout and device, batching, segmentation maps' labels.
NO_EFFECT_KEYS = frozenset(
    ("data_format", "input_data_format", "device", "return_tensors", "disable_grouping", "image_seq_length")
    + ("do_reduce_labels", "pad_size")  # pad_size is used only with do_pad, which is checked
)
# Bookkeeping that preprocessor_config.json carries besides the processor's settings.
RECORD_KEYS = frozenset(("image_processor_type", "feature_extractor_type", "processor_class", "_processor_class"))
CONVNEXT_SQUASH_FROM = 384  # ConvNextImageProcessor.resize: shortest_edge >= 384 squashes, below it resizes and crops

SizePair = Tuple[Tuple[int, ...], Tuple[int, int] | None]  # (Recipe.resize, Recipe.crop)


def _standard_sizes(processor: Any) -> SizePair:
    """TorchvisionBackend's own steps: resize to size (height x width, or the shorter side), then centre crop."""
    return _resize_of(processor), _crop_of(processor)


def _convnext_sizes(processor: Any) -> SizePair:
    """ConvNextImageProcessor.resize: below 384 the shorter side goes to int(shortest_edge / crop_pct), then the
    centre shortest_edge square is cropped; at 384 and above the image is squashed to a square."""
    shortest_edge = _size_field(processor, "shortest_edge")
    if not processor.do_resize:
        return (), _crop_of(processor)
    if shortest_edge < CONVNEXT_SQUASH_FROM:
        if processor.crop_pct is None:
            raise ModelSourceError("preprocessor_config.json's crop_pct is null: ConvNeXt needs it below 384")
        crop_pct = float(processor.crop_pct)
        if not 0 < crop_pct <= 1:
            raise ModelSourceError(f"preprocessor_config.json's crop_pct must be in (0, 1], got {crop_pct}")
        resize, crop = (int(shortest_edge / crop_pct),), (shortest_edge, shortest_edge)
        extra_crop = _crop_of(processor)
        if extra_crop is not None and extra_crop != crop:
            raise ModelSourceError(
                f"preprocessor_config.json's do_center_crop {extra_crop} after ConvNeXt's crop_pct crop {crop}: "
                "two centre crops in a row are not a recipe the Predictor holds"
            )
        return resize, crop
    return (shortest_edge, shortest_edge), _crop_of(processor)


# Processor classes whose arithmetic was read in transformers' source and is compiled here. BEiT's own _preprocess
# is TorchvisionBackend's for images (its label reduction is for segmentation maps); MobileViT's flips to BGR.
COMPILED: Dict[str, Tuple[Callable[[Any], SizePair], Tuple[str, ...]]] = {
    "ViTImageProcessor": (_standard_sizes, ()),
    "DeiTImageProcessor": (_standard_sizes, ()),
    "BeitImageProcessor": (_standard_sizes, ()),
    "BitImageProcessor": (_standard_sizes, ()),
    "ConvNextImageProcessor": (_convnext_sizes, ("crop_pct",)),
    "MobileViTImageProcessor": (_standard_sizes, ("do_flip_channel_order",)),
}


def recipe_from_processor(processor: Any) -> Recipe:
    """The Recipe that gives what `processor` (a transformers TorchvisionBackend image processor) gives.

    Output sizes, the shorter-side rounding (int(), as torchvision's), centre-crop offsets (int((H - h) / 2): floor),
    resample, rescale_factor, image_mean/image_std and channel order come from the processor's resolved settings,
    so old files (integer size and crop_size, feature_extractor_type) read as transformers reads them.
    Raises ModelSourceError for a processor class that is not compiled here, or a key it would apply that the
    Predictor cannot (named).
    """
    name = type(processor).__name__
    if name not in COMPILED:
        raise ModelSourceError(
            f"preprocessor_config.json's {name} is not a processor this tool compiles "
            f"(it compiles {', '.join(sorted(COMPILED))})"
        )
    sizes_of, own_keys = COMPILED[name]
    _refuse_unhonoured(processor, name, HONOURED_KEYS | NO_EFFECT_KEYS | set(own_keys))
    resize, crop = sizes_of(processor)
    rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
    mean = std = None
    if processor.do_normalize:
        mean, std = _channels(processor.image_mean), _channels(processor.image_std)
    flip = name == "MobileViTImageProcessor" and bool(processor.do_flip_channel_order)
    return Recipe(
        resize=resize,
        interpolation=_interpolation(processor.resample) if resize else "bilinear",
        antialias=True,  # TorchvisionBackend.resize's default (nearest ignores it)
        crop=crop,
        crop_rounding="floor",
        channel_order="BGR" if flip else "RGB",
        rescale=rescale,
        mean=mean,
        std=std,
    )


def _refuse_unhonoured(processor: Any, name: str, allowed: frozenset) -> None:
    """A setting the processor would apply and the Predictor cannot is refused by name; a key the processor
    does not know is ignored, as transformers ignores it, with a warning."""
    known = _known_keys(processor)
    for key in sorted(known - allowed):
        value = getattr(processor, key, None)
        if value is not None and value is not False:
            raise ModelSourceError(
                f"preprocessor_config.json's {key} ({value!r}): {name} applies it and the Predictor cannot"
            )
    unknown = sorted(set(processor.to_dict()) - known - RECORD_KEYS)
    if unknown:
        shown = ", ".join(unknown)
        logger.warning("preprocessor_config.json: %s does not use %s; ignored, as transformers ignores it", name, shown)


def _known_keys(processor: Any) -> set:
    """The settings the processor class takes: its valid_kwargs TypedDict (whose annotations include the base's)."""
    return set(processor.valid_kwargs.__annotations__)


def _resize_of(processor: Any) -> Tuple[int, ...]:
    if not processor.do_resize:
        return ()
    size = processor.size
    if size is None:
        raise ModelSourceError("preprocessor_config.json has do_resize but no size")
    extra = [f"size.{key}" for key, value in dict(size).items() if key not in ("height", "width", "shortest_edge")]
    if extra:
        raise ModelSourceError(
            f"preprocessor_config.json's {', '.join(extra)}: the Predictor resizes to height x width or the shorter "
            "side only"
        )
    if size.height and size.width and not size.shortest_edge:
        return int(size.height), int(size.width)
    if size.shortest_edge and not (size.height or size.width):
        return (int(size.shortest_edge),)
    raise ModelSourceError(f"preprocessor_config.json's size {dict(size)}: expected height and width, or shortest_edge")


def _crop_of(processor: Any) -> Tuple[int, int] | None:
    if not processor.do_center_crop:
        return None
    crop_size = processor.crop_size
    if crop_size is None or not (crop_size.height and crop_size.width):
        raise ModelSourceError(
            f"preprocessor_config.json's crop_size {None if crop_size is None else dict(crop_size)}: "
            "do_center_crop needs a height and a width"
        )
    return int(crop_size.height), int(crop_size.width)


def _size_field(processor: Any, key: str) -> int:
    value = getattr(processor.size, key, None) if processor.size is not None else None
    if not value:
        shown = None if processor.size is None else dict(processor.size)
        raise ModelSourceError(f"preprocessor_config.json's size {shown}: {type(processor).__name__} needs {key}")
    return int(value)


def _interpolation(resample: Any) -> str:
    code = int(resample) if resample is not None else 2  # TorchvisionBackend.resize's default: bilinear
    if code not in RESAMPLE_INTERPOLATIONS:
        name = RESAMPLE_NAMES.get(code, str(code))
        raise ModelSourceError(
            f"preprocessor_config.json's resample {code} ({name}): the Predictor resizes bilinear, bicubic or nearest"
        )
    return RESAMPLE_INTERPOLATIONS[code]


def _channels(values: Any) -> Tuple[float, ...]:
    """image_mean / image_std: one number for every channel, or one per channel."""
    listed = [values] if isinstance(values, (int, float)) else list(values)
    return tuple(float(v) for v in listed)
