"""Predictor: a trained CNN wrapped with its eval recipe and output head, ready for torch.jit.script."""

from typing import List, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from ..constants import FULL_DECODE_RESIZE_SIZE
from ..errors import RecipeError
from .recipe import HEADS, IMAGENET_RECIPE, Recipe


class RecipeTransform(nn.Module):
    """A Recipe as scriptable steps: images (N, 3, H, W) or (3, H, W), uint8 in [0, 255] or float in [0, 1],
    to float32 (N, C, h, w) or (C, h, w) as Recipe.output_size says.

    uint8 images stay uint8 through grayscale, resize and crop, as PIL keeps them, and are resized by torch's
    own uint8 kernels on the CPU (antialiased bilinear and bicubic, nearest): a 12-megapixel photo in ~15 ms
    rather than ~300 ms through float, within one grey level of torchvision's float path. Other devices and
    the non-antialiased modes resize in float and round back, as torchvision's Resize does.

    Resize calls the aten kernels themselves, never F.interpolate: a scripted F.interpolate carries every
    mode's branch, and newer torch adds modes (lanczos) whose operators older torch cannot load. TorchServe's
    official 0.12.0 images carry torch 2.4.0.
    """

    # Declared here: TorchScript cannot infer the type of an empty list or a None.
    resize: List[int]
    max_size: int | None
    crop: List[int] | None

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.resize: List[int] = list(recipe.resize)
        self.max_size: int | None = recipe.max_size
        self.interpolation: str = recipe.interpolation
        self.antialias: bool = recipe.antialias
        self.crop: List[int] | None = list(recipe.crop) if recipe.crop is not None else None
        self.grayscale: int = recipe.grayscale
        self.grayscale_first: bool = recipe.grayscale_first
        self.crop_floor: bool = recipe.crop_rounding == "floor"
        self.bgr: bool = recipe.channel_order == "BGR"
        self.rescale: float = recipe.rescale
        self.normalize: bool = recipe.mean is not None
        mean = recipe.mean if recipe.mean is not None else (0.0,)
        std = recipe.std if recipe.std is not None else (1.0,)
        self.register_buffer("mean_", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std_", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        batch = img if img.dim() == 4 else img.unsqueeze(0)
        was_uint8 = batch.dtype == torch.uint8
        if self.grayscale > 0 and self.grayscale_first:
            batch = self._to_grayscale(batch)
        if len(self.resize) > 0:
            batch = self._resize(batch)
        crop = self.crop  # a local: TorchScript refines Optional locals only
        if crop is not None:
            batch = center_crop(batch, crop, self.crop_floor)
        if self.grayscale > 0 and not self.grayscale_first:
            batch = self._to_grayscale(batch)
        if self.bgr:
            batch = batch.flip(-3)
        # Float input is the tutorial's T.ToTensor() output, x / 255: rescaled by what is left of the factor.
        factor = self.rescale if was_uint8 else self.rescale * 255.0
        out = batch.to(torch.float32)
        if abs(factor - 1.0) > 1e-12:
            out = out * factor
        if self.normalize:
            out = (out - self.mean_) / self.std_
        return out if img.dim() == 4 else out.squeeze(0)

    def _resize(self, batch: torch.Tensor) -> torch.Tensor:
        height, width = batch.shape[-2], batch.shape[-1]
        size = output_size([height, width], self.resize, self.max_size)
        if size[0] == height and size[1] == width:
            return batch  # torchvision and PIL leave an image of the asked size as it is
        uint8_native = batch.dtype == torch.uint8 and batch.device.type == "cpu"
        if self.interpolation in ["nearest", "nearest-exact"]:
            if self.interpolation == "nearest":
                return torch.ops.aten.upsample_nearest2d(batch, size, None, None)
            return torch.ops.aten._upsample_nearest_exact2d(batch, size, None, None)
        if batch.is_floating_point() or (uint8_native and self.antialias):
            return self._interpolate(batch, size)
        resized = self._interpolate(batch.float(), size).round()
        if self.interpolation == "bicubic":
            resized = resized.clamp(0, 255)  # bicubic overshoots; torchvision and PIL clamp
        return resized.to(batch.dtype)

    def _interpolate(self, batch: torch.Tensor, size: List[int]) -> torch.Tensor:
        if self.interpolation == "bicubic":
            if self.antialias:
                return torch.ops.aten._upsample_bicubic2d_aa(batch, size, False, None, None)
            return torch.ops.aten.upsample_bicubic2d(batch, size, False, None, None)
        if self.antialias:
            return torch.ops.aten._upsample_bilinear2d_aa(batch, size, False, None, None)
        return torch.ops.aten.upsample_bilinear2d(batch, size, False, None, None)

    def _to_grayscale(self, batch: torch.Tensor) -> torch.Tensor:
        r, g, b = batch[:, 0:1], batch[:, 1:2], batch[:, 2:3]
        if batch.dtype == torch.uint8:
            # PIL's ITU-R 601-2 luma in 16-bit fixed point, rounded (libImaging/Convert.c, L24): uint8 images
            # turn grey exactly as PIL's convert("L") does. Float images use torchvision's 0.2989/0.587/0.114.
            luma = r.int() * 19595 + g.int() * 38470 + b.int() * 7471
            grey = torch.div(luma + 32768, 65536, rounding_mode="floor").to(torch.uint8)
        else:
            grey = (0.2989 * r + 0.587 * g + 0.114 * b).to(batch.dtype)
        return grey.expand(-1, self.grayscale, -1, -1).contiguous() if self.grayscale == 3 else grey


def center_crop(img: torch.Tensor, crop: List[int], floor: bool) -> torch.Tensor:
    """torchvision's center_crop (zero padding where the image is smaller, the smaller half before), its offsets
    (H - h) / 2 rounded as torchvision rounds them (int(round())) or, with `floor`, floored (Hugging Face image
    processors' int(), numpy's //): on an odd margin they differ by one pixel."""
    if not floor:
        return TF.center_crop(img, crop)
    height, width = img.shape[-2], img.shape[-1]
    crop_height, crop_width = crop[0], crop[1]
    if crop_width > width or crop_height > height:
        pad_width, pad_height = max(crop_width - width, 0), max(crop_height - height, 0)
        img = F.pad(img, [pad_width // 2, (pad_width + 1) // 2, pad_height // 2, (pad_height + 1) // 2])
        height, width = img.shape[-2], img.shape[-1]
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return img[..., top : top + crop_height, left : left + crop_width]


def output_size(image_size: List[int], size: List[int], max_size: int | None) -> List[int]:
    """(h, w) after torchvision's Resize(size, max_size) of an image (h, w): (n,) scales the shorter side to n,
    the longer one truncated (int(n * long / short)) and capped at max_size; (h, w) is taken as it is."""
    if len(size) == 2:
        return [size[0], size[1]]
    height, width = image_size[0], image_size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return [new_long, new_short] if width <= height else [new_short, new_long]


def check_head(head: str, outputs: int, class_names: int) -> None:
    """Refuse a head that cannot answer one probability per class name from `outputs` logits (RecipeError).

    softmax: one output per class, at least 2 (a softmax over one value is always 1). sigmoid: one output per
    class (multi-label, or one class), or one logit for two class names (negative, positive)."""
    if head not in HEADS:
        raise RecipeError(f"head {head!r}: expected softmax or sigmoid")
    if outputs == 1 and head == "softmax":
        raise RecipeError(
            "the network has one output: a softmax over one value is always 1; use head sigmoid (a binary "
            "classifier trained with BCEWithLogitsLoss), with one class name or two (negative, positive)"
        )
    if outputs == class_names or (head == "sigmoid" and outputs == 1 and class_names == 2):
        return
    raise RecipeError(f"the model outputs {outputs} classes but {class_names} class names were given")


def count_outputs(network: nn.Module, input_size: Sequence[int]) -> int | None:
    """The network's outputs per image, from a blank batch of two shaped input_size (C, h, w); None when it
    fails or does not return (images, outputs) (check_network_output then names what is wrong)."""
    try:
        with torch.no_grad():
            logits = network(torch.zeros([2] + list(input_size)))
    except Exception:
        return None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        return None
    return int(logits.shape[1])


def default_head(outputs: int | None) -> str:
    """sigmoid for one output (never softmaxed), softmax otherwise."""
    return "sigmoid" if outputs == 1 else "softmax"


class Predictor(nn.Module):
    """Images in, class probabilities out; the single source of preprocessing truth.

    `forward` takes a batch (N, 3, H, W), uint8 in [0, 255] or float in [0, 1], exactly as in the
    tutorial. A server whose requests carry images of different sizes calls `preprocess` on each
    image, stacks the results and calls `classify` once, so nothing is repeated outside the .pt.

    `recipe` is the eval preprocessing; `head` turns logits into probabilities: "softmax" (classes exclude
    each other) or "sigmoid" (one probability per class, multi-label; one logit with two class names
    answers [1 - p, p]). Every recipe value, the head and the class names stay readable on the scripted
    module. Raises RecipeError for a head that does not fit the network's outputs and the class names.
    """

    # Declared here: TorchScript cannot infer the type of an empty list or a None.
    resize: List[int]
    max_size: int | None
    crop: List[int] | None
    mean: List[float] | None
    std: List[float] | None

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        recipe: Recipe = IMAGENET_RECIPE,
        head: str = "softmax",
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.class_names: List[str] = list(class_names)
        self.transforms = RecipeTransform(recipe)
        self.recipe = recipe  # the eager object; scripting keeps the plain values below
        # Kept on the module so that a server (and validate) can read the whole recipe from the .pt alone.
        self.resize: List[int] = list(recipe.resize)
        self.max_size: int | None = recipe.max_size
        self.interpolation: str = recipe.interpolation
        self.antialias: bool = recipe.antialias
        self.crop: List[int] | None = list(recipe.crop) if recipe.crop is not None else None
        self.grayscale: int = recipe.grayscale
        self.grayscale_first: bool = recipe.grayscale_first
        self.crop_rounding: str = recipe.crop_rounding
        self.channel_order: str = recipe.channel_order
        self.rescale: float = recipe.rescale
        self.mean: List[float] | None = list(recipe.mean) if recipe.mean is not None else None
        self.std: List[float] | None = list(recipe.std) if recipe.std is not None else None
        self.input_size: List[int] = list(recipe.output_size)  # (C, h, w) that classify takes
        # The handler decodes a JPEG at reduced scale only while its shorter side stays >= a factor of this.
        self.resize_size: int = recipe.decode_size or FULL_DECODE_RESIZE_SIZE
        self.head: str = head
        outputs = count_outputs(self.model, self.input_size) or len(self.class_names)
        check_head(head, outputs, len(self.class_names))
        self.one_logit_pair: bool = outputs == 1 and len(self.class_names) == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classify(self.transforms(x))

    @torch.jit.export
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """One RGB image (3, H, W), uint8 or float in [0, 1], of any size, to the float32 input_size tensor."""
        if image.dim() != 3 or image.size(0) != 3:
            raise ValueError(f"expected one image shaped (3, H, W), got {list(image.shape)}")
        with torch.no_grad():
            return self.transforms(image)

    @torch.jit.export
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """A preprocessed batch (N, C, h, w) to probabilities (N, number of class names), float32."""
        with torch.no_grad():
            logits = self.model(batch)
            if self.head == "softmax":
                return F.softmax(logits, dim=1)
            probabilities = torch.sigmoid(logits)
            if self.one_logit_pair:
                return torch.cat([1.0 - probabilities, probabilities], dim=1)
            return probabilities
