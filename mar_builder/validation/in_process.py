"""Answers computed in this process: (a) the eager network with training-style PIL preprocessing, (b) the .pt."""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..errors import ValidationError
from ..model.export import torchscript_deprecation_acknowledged

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PtSettings:
    """What the exported Predictor carries besides its network (see mar_builder/model/predictor.py)."""

    class_names: Tuple[str, ...]  # output i is class_names[i]
    mean: Tuple[float, ...]  # per channel (R, G, B), of pixels in [0, 1]
    std: Tuple[float, ...]  # per channel
    resize_size: int  # the short side is resized to this many pixels
    crop_size: int  # then the centre square of this side is kept


def load_pt(path: Path) -> Tuple[torch.jit.ScriptModule, PtSettings]:
    """The scripted Predictor and its settings. Raises ValidationError when it is not one of ours."""
    with torchscript_deprecation_acknowledged():
        try:
            pt = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:
            raise ValidationError(f"{path.name} in the archive is not a TorchScript file: {e}") from None
    missing = [a for a in ("class_names", "mean", "std", "resize_size", "crop_size", "model") if not hasattr(pt, a)]
    if missing:
        raise ValidationError(
            f"{path.name} in the archive lacks {', '.join(missing)}: build the archive with this tool (./build_mar.sh)"
        )
    settings = PtSettings(tuple(pt.class_names), tuple(pt.mean), tuple(pt.std), int(pt.resize_size), int(pt.crop_size))
    return pt, settings


def training_transforms(settings: PtSettings) -> T.Compose:
    """The tutorial's testval_transforms with the archive's own sizes, mean and std: PIL image in,
    normalized float (3, crop, crop) out."""
    return T.Compose(
        [
            T.Resize(settings.resize_size),
            T.CenterCrop(settings.crop_size),
            T.ToTensor(),
            T.Normalize(settings.mean, settings.std),
        ]
    )


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

    def __init__(self, pt: torch.jit.ScriptModule, settings: PtSettings, eager_network: nn.Module | None) -> None:
        self.pt = pt
        # Without an eager network, the one inside the .pt (scripted or traced) stands in for it.
        self.network = (eager_network if eager_network is not None else pt.model).eval()
        self.transforms = training_transforms(settings)

    def eager(self, image: Image.Image) -> torch.Tensor:
        with torch.no_grad():
            return F.softmax(self.network(self.transforms(image).unsqueeze(0)), dim=1)[0].float()

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
    from ..model.user_model import Preprocessing, UserModel, build_predictor

    kwargs = dict(user_flags)
    if kwargs.get("model_kwargs") is not None:
        kwargs["model_kwargs"] = parse_model_kwargs(kwargs["model_kwargs"])
    preprocessing = Preprocessing(settings.mean, settings.std, settings.resize_size, settings.crop_size)
    user_model = UserModel(class_names=settings.class_names, preprocessing=preprocessing, **kwargs)
    return build_predictor(user_model).model


def top(probabilities: torch.Tensor, k: int) -> List[Tuple[int, float]]:
    """The k most likely (class index, probability) pairs, most likely first."""
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return list(zip(indices.tolist(), values.tolist(), strict=True))
