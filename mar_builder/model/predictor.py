"""Predictor: a trained CNN wrapped with its preprocessing and softmax, ready for torch.jit.script."""

from typing import List, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import nn

from ..constants import DEFAULT_CROP_SIZE, DEFAULT_MEAN, DEFAULT_RESIZE_SIZE, DEFAULT_STD


class UInt8Resize(T.Resize):
    """torchvision's Resize (bilinear, antialiased), with torch's uint8 kernel for uint8 images on the CPU.

    T.Resize converts a uint8 image to float, resizes and rounds back; torch's own uint8 kernel gives
    the same image within one grey level, several times faster (a 12-megapixel photo in ~15 ms rather
    than ~300 ms). Other images are resized in float, rounded back to uint8 as T.Resize does.

    The kernel is called as `aten::_upsample_bilinear2d_aa` rather than through F.interpolate: a scripted
    F.interpolate carries every mode's branch, and newer torch adds modes (lanczos) whose operators older
    torch cannot load. TorchServe's official 0.12.0 images carry torch 2.4.0.
    """

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        size = TF._compute_resized_output_size((img.shape[-2], img.shape[-1]), self.size, self.max_size)
        batch = img if img.dim() == 4 else img.unsqueeze(0)
        if batch.is_floating_point() or (batch.dtype == torch.uint8 and batch.device.type == "cpu"):
            resized = torch.ops.aten._upsample_bilinear2d_aa(batch, size, False, None, None)
        else:
            resized = torch.ops.aten._upsample_bilinear2d_aa(batch.float(), size, False, None, None)
            resized = resized.round().to(batch.dtype)
        return resized if img.dim() == 4 else resized.squeeze(0)


class Predictor(nn.Module):
    """Images in, class probabilities out; the single source of preprocessing truth.

    `forward` takes a batch (N, 3, H, W), uint8 in [0, 255] or float in [0, 1], exactly as in the
    tutorial. A server whose requests carry images of different sizes calls `preprocess` on each
    image, stacks the results and calls `classify` once, so nothing is repeated outside the .pt.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        resize_size: int = DEFAULT_RESIZE_SIZE,
        crop_size: int = DEFAULT_CROP_SIZE,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {list(std)}")
        if crop_size > resize_size:
            raise ValueError(f"crop size {crop_size} is larger than resize size {resize_size}")
        self.model = model.eval()
        self.class_names: List[str] = list(class_names)
        # Kept on the module so that a server can read them from the .pt alone.
        self.mean: List[float] = [float(m) for m in mean]
        self.std: List[float] = [float(s) for s in std]
        self.resize_size: int = resize_size
        self.crop_size: int = crop_size
        self.transforms = nn.Sequential(
            UInt8Resize([resize_size]),  # a one-element list: TorchScript needs a sequence here
            T.CenterCrop(crop_size),
            T.ConvertImageDtype(torch.float),
            T.Normalize(self.mean, self.std),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classify(self.transforms(x))

    @torch.jit.export
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """One (3, H, W) image of any size to a (3, crop, crop) normalized float tensor."""
        if image.dim() != 3 or image.size(0) != 3:
            raise ValueError(f"expected one image shaped (3, H, W), got {list(image.shape)}")
        with torch.no_grad():
            return self.transforms(image)

    @torch.jit.export
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """A preprocessed batch (N, 3, crop, crop) to probabilities (N, number of classes)."""
        with torch.no_grad():
            return F.softmax(self.model(batch), dim=1)
