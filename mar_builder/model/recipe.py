"""Recipe: the eval preprocessing a classifier was trained with, as plain numbers that the Predictor compiles.

A Recipe turns a uint8 RGB image (3, H, W) into the float tensor (C, h, w) that the network sees, in this
order: grayscale (when `grayscale_first`), resize, centre crop, grayscale (otherwise), channel order,
rescale, normalize. Every step follows torchvision's arithmetic (transforms.Resize, CenterCrop, Grayscale,
ConvertImageDtype, Normalize), and `pil_reference()` gives the same recipe as torchvision transforms on
PIL images, the way an ImageFolder training loop applies them.
"""

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, Tuple

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import RecipeError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")  # torchvision InterpolationMode values
CHANNEL_ORDERS = ("RGB", "BGR")
HEADS = ("softmax", "sigmoid")
CROP_ROUNDINGS = ("round", "floor")


@dataclass(frozen=True)
class Recipe:
    """Eval preprocessing: a uint8 RGB (3, H, W) image -> the float (C, h, w) tensor the network sees.

    Sizes are pixels, (height, width) where there are two. Raises RecipeError (a ValueError) on any value
    that torchvision would refuse or that could not give every image the same output size.
    """

    resize: Tuple[int, ...] = (256,)  # (): none; (n,): the shorter side to n (torchvision Resize([n]));
    # (h, w): exactly h x w (a squash)
    max_size: int | None = None  # with (n,): cap on the longer side, as torchvision Resize(max_size=)
    interpolation: str = "bilinear"  # torchvision InterpolationMode values: see INTERPOLATIONS
    antialias: bool = True  # for bilinear and bicubic (PIL always antialiases; nearest never does)
    crop: Tuple[int, int] | None = (224, 224)  # centre crop (h, w), torchvision CenterCrop arithmetic
    # (zero padding where the image is smaller); None: none
    grayscale: int = 0  # 0: keep colour; 1 or 3: torchvision Grayscale(num_output_channels)
    channel_order: str = "RGB"  # "RGB" or "BGR" (BGR reverses the channels, after the colour steps)
    rescale: float = 1 / 255  # uint8 -> float factor (ConvertImageDtype's and ToTensor's is 1/255)
    mean: Tuple[float, ...] | None = IMAGENET_MEAN  # None (with std None): no normalisation;
    # one value per channel the network sees (in its channel order), or one for all
    std: Tuple[float, ...] | None = IMAGENET_STD
    grayscale_first: bool = False  # convert to grayscale before resizing (the transform's own order)
    crop_rounding: str = "round"  # the crop's top/left offset (H - h) / 2: "round" as torchvision's CenterCrop,
    # "floor" as Hugging Face image processors and numpy slicing ((H - h) // 2); see CROP_ROUNDINGS

    def __post_init__(self) -> None:
        # Lists are accepted and kept as tuples, so that a Recipe compares and hashes by value.
        for name in ("resize", "crop", "mean", "std"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if len(self.resize) > 2 or not all(_positive_int(v) for v in self.resize):
            raise RecipeError(f"resize must be (), (n,) or (h, w) of positive integers, got {self.resize}")
        if self.max_size is not None:
            if len(self.resize) != 1 or not _positive_int(self.max_size):
                raise RecipeError(f"max_size goes with a resize of the shorter side (n,), got resize {self.resize}")
            if self.max_size <= self.resize[0]:
                raise RecipeError(
                    f"max_size {self.max_size} must be larger than the resize {self.resize[0]} (torchvision's rule)"
                )
        if self.interpolation not in INTERPOLATIONS:
            raise RecipeError(f"interpolation {self.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
        if not isinstance(self.antialias, bool):
            raise RecipeError(f"antialias must be True or False, got {self.antialias!r}")
        if self.crop is not None and (len(self.crop) != 2 or not all(_positive_int(v) for v in self.crop)):
            raise RecipeError(f"crop must be (h, w) of positive integers or None, got {self.crop}")
        if self.crop is None and len(self.resize) != 2:
            raise RecipeError(
                f"resize {self.resize} without a crop gives each image its own size; the Predictor batches images "
                "of different sizes, so the recipe must end at a fixed size: add a crop or resize to (h, w)"
            )
        if self.crop_rounding not in CROP_ROUNDINGS:
            raise RecipeError(f"crop_rounding {self.crop_rounding!r}: expected round or floor")
        if self.grayscale not in (0, 1, 3):
            raise RecipeError(f"grayscale must be 0 (colour), 1 or 3 (output channels), got {self.grayscale!r}")
        if self.grayscale_first and not self.grayscale:
            raise RecipeError("grayscale_first needs grayscale 1 or 3")
        if self.channel_order not in CHANNEL_ORDERS:
            raise RecipeError(f"channel_order {self.channel_order!r}: expected RGB or BGR")
        if isinstance(self.rescale, bool) or not isinstance(self.rescale, (int, float)):
            raise RecipeError(f"rescale must be a number, got {self.rescale!r}")
        if not (math.isfinite(self.rescale) and self.rescale > 0):
            raise RecipeError(f"rescale must be a positive finite number, got {self.rescale}")
        object.__setattr__(self, "rescale", float(self.rescale))
        self._check_normalization()

    def _check_normalization(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise RecipeError("mean and std go together: give both, or neither for no normalisation")
        if self.mean is None or self.std is None:
            return
        channels = self.channels
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                wanted = "1 value" if channels == 1 else f"{channels} values (one per channel the network sees) or 1"
                raise RecipeError(f"{name} needs {wanted}, got {len(values)}: {_listed(values)}")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise RecipeError(f"{name} values must be finite numbers, got {_listed(values)}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if any(s <= 0 for s in self.std):
            raise RecipeError(f"std values must be positive, got {_listed(self.std)}")

    @property
    def channels(self) -> int:
        """Channels of the output: 3, or grayscale's 1 or 3."""
        return self.grayscale or 3

    @property
    def output_size(self) -> Tuple[int, int, int]:
        """(channels, height, width) of every output: what the network's classify input is."""
        height, width = self.crop if self.crop is not None else self.resize
        return self.channels, height, width

    @property
    def decode_size(self) -> int | None:
        """The smallest shorter side an image may be decoded at (a JPEG draft) without changing what the recipe
        resizes from; None where nothing is resized (every pixel counts)."""
        if not self.resize:
            return None
        return max(self.resize)

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> str:
        """One line, e.g. 'resize 256 bilinear (antialias), crop 224x224, RGB, x1/255, mean 0.485,...'."""
        parts = []
        if self.grayscale and self.grayscale_first:
            parts.append(f"grayscale to {self.grayscale}")
        if self.resize:
            size = "x".join(str(v) for v in self.resize) if len(self.resize) == 2 else f"shorter side {self.resize[0]}"
            cap = f" (max {self.max_size})" if self.max_size is not None else ""
            aa = " antialiased" if self.antialias and self.interpolation in ("bilinear", "bicubic") else ""
            parts.append(f"resize {size}{cap} {self.interpolation}{aa}")
        if self.crop is not None:
            floored = " (offsets floored)" if self.crop_rounding == "floor" else ""
            parts.append(f"crop {self.crop[0]}x{self.crop[1]}{floored}")
        if self.grayscale and not self.grayscale_first:
            parts.append(f"grayscale to {self.grayscale}")
        parts.append(self.channel_order)
        parts.append("x1/255" if abs(self.rescale - 1 / 255) < 1e-12 else f"x{self.rescale:g}")
        if self.mean is not None and self.std is not None:
            parts.append(f"mean {_listed(self.mean)}, std {_listed(self.std)}")
        else:
            parts.append("no normalisation")
        return ", ".join(parts)

    def pil_reference(self) -> Any:
        """The recipe as torchvision transforms on a PIL RGB image (torchvision.transforms.Compose): the way
        training loops apply it, and the reference the Predictor's uint8 path is checked against."""
        import torch
        import torchvision.transforms as T

        steps: list = []
        if self.grayscale and self.grayscale_first:
            steps.append(T.Grayscale(self.grayscale))
        if self.resize:
            mode = T.InterpolationMode(self.interpolation)
            size = list(self.resize)
            steps.append(T.Resize(size, interpolation=mode, max_size=self.max_size, antialias=self.antialias))
        if self.crop is not None and self.crop_rounding == "floor":
            crop = self.crop
            steps.append(T.Lambda(lambda image: _floor_center_crop(image, crop)))
        elif self.crop is not None:
            steps.append(T.CenterCrop(list(self.crop)))
        if self.grayscale and not self.grayscale_first:
            steps.append(T.Grayscale(self.grayscale))
        steps.append(T.PILToTensor())
        if self.channel_order == "BGR":
            steps.append(T.Lambda(lambda x: x.flip(0)))
        rescale = self.rescale
        steps.append(T.Lambda(lambda x: x.to(torch.float32) * rescale))
        if self.mean is not None and self.std is not None:
            steps.append(T.Normalize(list(self.mean), list(self.std)))
        return T.Compose(steps)


def _floor_center_crop(image: Any, crop: Tuple[int, int]) -> Any:
    """CenterCrop of a PIL image with floored offsets (crop_rounding "floor"), zero padding as torchvision pads."""
    import torchvision.transforms.functional as TF

    (crop_height, crop_width), (width, height) = crop, image.size
    pad_width, pad_height = max(crop_width - width, 0), max(crop_height - height, 0)
    if pad_width or pad_height:
        image = TF.pad(image, [pad_width // 2, pad_height // 2, (pad_width + 1) // 2, (pad_height + 1) // 2], fill=0)
        width, height = image.size
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return image.crop((left, top, left + crop_width, top + crop_height))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _listed(values: Tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


# torchvision's classic ImageNet eval recipe (its v1 weights): resize 256 bilinear, crop 224, ImageNet mean and std.
IMAGENET_RECIPE = Recipe()
