"""Answers computed in this process: (a) the eager network with training-style PIL preprocessing, (b) the .pt."""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..errors import ValidationError
from ..model.export import torchscript_deprecation_acknowledged
from ..model.recipe import Recipe

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PtSettings:
    """What the exported Predictor carries besides its network (see mar_builder/model/predictor.py)."""

    class_names: Tuple[str, ...]  # output i is class_names[i]
    recipe: Recipe  # its eval preprocessing
    head: str  # "softmax" or "sigmoid"


def load_pt(path: Path) -> Tuple[torch.jit.ScriptModule, PtSettings]:
    """The scripted Predictor and its settings. Raises ValidationError when it is not one of ours."""
    with torchscript_deprecation_acknowledged():
        try:
            pt = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:
            raise ValidationError(f"{path.name} in the archive is not a TorchScript file: {e}") from None
    missing = [a for a in ("class_names", "model", "preprocess", "classify") if not hasattr(pt, a)]
    if not hasattr(pt, "interpolation"):  # exported before recipes: resize_size, crop_size, mean, std
        missing += [a for a in ("mean", "std", "resize_size", "crop_size") if not hasattr(pt, a)]
    if missing:
        raise ValidationError(
            f"{path.name} in the archive lacks {', '.join(missing)}: build the archive with this tool (./build_mar.sh)"
        )
    return pt, PtSettings(tuple(pt.class_names), pt_recipe(pt), str(getattr(pt, "head", "softmax")))


def pt_recipe(pt: torch.jit.ScriptModule) -> Recipe:
    """The Recipe that an exported Predictor carries as attributes (resize_size and crop_size before recipes)."""
    if not hasattr(pt, "interpolation"):
        crop = int(pt.crop_size)
        return Recipe(resize=(int(pt.resize_size),), crop=(crop, crop), mean=tuple(pt.mean), std=tuple(pt.std))
    return Recipe(
        resize=tuple(pt.resize),
        max_size=pt.max_size,
        interpolation=str(pt.interpolation),
        antialias=bool(pt.antialias),
        crop=tuple(pt.crop) if pt.crop is not None else None,
        grayscale=int(pt.grayscale),
        grayscale_first=bool(pt.grayscale_first),
        channel_order=str(pt.channel_order),
        rescale=float(pt.rescale),
        mean=tuple(pt.mean) if pt.mean is not None else None,
        std=tuple(pt.std) if pt.std is not None else None,
        crop_rounding=str(pt.crop_rounding) if hasattr(pt, "crop_rounding") else "round",
    )


def training_transforms(settings: PtSettings) -> Callable[[Image.Image], torch.Tensor]:
    """The archive's recipe as torchvision transforms on PIL images, as a training loop applies them:
    PIL image in, normalized float (C, h, w) out."""
    return settings.recipe.pil_reference()


def read_photo(path: Path) -> Tuple[bytes, Image.Image]:
    """The file's bytes and its RGB image, decoded as torchvision's ImageFolder does (no EXIF rotation).

    Raises OSError (UnidentifiedImageError for what is not an image), or whatever Pillow raises for a
    damaged one.
    """
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return data, image.convert("RGB")
    except UnidentifiedImageError:
        raise UnidentifiedImageError(f"not an image Pillow can identify (first bytes {data[:4].hex(' ')})") from None


def exif_rotates(data: bytes) -> bool:
    """Whether the photo's EXIF orientation turns or mirrors it: the handler applies it, ImageFolder does not."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.getexif().get(EXIF_ORIENTATION) in (2, 3, 4, 5, 6, 7, 8)
    except Exception:
        return False


class InProcessModels:
    """(a) and (b) for one photo at a time, each as probabilities shaped (number of classes,), float32."""

    def __init__(
        self,
        pt: torch.jit.ScriptModule,
        settings: PtSettings,
        eager_network: nn.Module | None,
        transforms: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> None:
        self.pt = pt
        # Without an eager network, the one inside the .pt (scripted or traced) stands in for it.
        self.network = (eager_network if eager_network is not None else pt.model).eval()
        # The user's own eval transform (--transforms) when given, else the archive's recipe on PIL images.
        self.transforms = transforms if transforms is not None else training_transforms(settings)
        self.head = settings.head
        self.pair = settings.head == "sigmoid" and len(settings.class_names) == 2

    def eager(self, image: Image.Image) -> torch.Tensor:
        with torch.no_grad():
            logits = self.network(self.transforms(image).unsqueeze(0)).float()
        if self.head == "softmax":
            return F.softmax(logits, dim=1)[0]
        probabilities = torch.sigmoid(logits)[0]
        if self.pair and probabilities.numel() == 1:
            return torch.cat([1 - probabilities, probabilities])
        return probabilities

    def exported(self, image: Image.Image) -> torch.Tensor:
        """The .pt called the tutorial's way: T.ToTensor() floats in [0, 1], a batch of one."""
        with torch.no_grad():
            return self.pt(T.ToTensor()(image).unsqueeze(0))[0].float()


def eager_network(settings: PtSettings, default_model: bool, user_flags: Dict[str, Any]) -> nn.Module | None:
    """The eager network the flags name, or None (the .pt's own network stands in).

    `user_flags` holds arch, model_file, model_kwargs, weights and allow_pickle as `build` takes them.
    Raises ValidationError when the network does not fit the archive's class_names.
    """
    given = [k for k, v in user_flags.items() if v not in (None, False)]
    if default_model and given:
        raise ValidationError(f"--default-model excludes {', '.join('--' + k.replace('_', '-') for k in given)}")
    if default_model:
        from ..model.default_model import imagenet_class_names, load_default_model

        if list(settings.class_names) != imagenet_class_names():
            raise ValidationError(
                "--default-model: the archive's class_names are not the 1000 ImageNet labels of the default model"
            )
        return load_default_model()
    if not given:
        return None
    from ..model.model_sources import parse_model_kwargs
    from ..model.user_model import UserModel, build_predictor

    kwargs = dict(user_flags)
    if kwargs.get("model_kwargs") is not None:
        kwargs["model_kwargs"] = parse_model_kwargs(kwargs["model_kwargs"])
    user_model = UserModel(class_names=settings.class_names, recipe=settings.recipe, head=settings.head, **kwargs)
    return build_predictor(user_model).model


def top(probabilities: torch.Tensor, k: int) -> List[Tuple[int, float]]:
    """The k most likely (class index, probability) pairs, most likely first."""
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return list(zip(indices.tolist(), values.tolist(), strict=True))
