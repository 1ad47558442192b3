"""Defaults and paths shared by the build and server sides, kept in one place."""

from pathlib import Path

# The checkout: handler/, config.properties, samples/ and model_store/ are found from here.
REPO_ROOT = Path(__file__).resolve().parent.parent

# Preprocessing of the tutorial this project follows: resize the short side, then crop the centre.
DEFAULT_RESIZE_SIZE = 256
DEFAULT_CROP_SIZE = 224
# The default model (EfficientNet-Lite0) was trained on inputs scaled to [-1, 1].
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)

DEFAULT_MODEL_NAME = "classifier"
DEFAULT_MODEL_VERSION = "1.0"
DEFAULT_TOPK = 5

# Your own model: the normalization that torchvision's and most ImageNet-style training recipes use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# resize_size of a wrapped TorchScript classifier (--pt): it resizes inside its own forward, so the
# handler must never decode a JPEG at reduced scale for it; no image's short side reaches this.
FULL_DECODE_RESIZE_SIZE = 2**31 - 1
