"""Generated photos to calibrate int8 on, and a small convolutional network whose int8 answers can differ."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mar_builder.model.export import export_predictor
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe

CLASSES = ["class_0", "class_1", "class_2", "class_3", "class_4"]
# Small sizes keep NNCF's rounds quick; the network's preprocessing is the Predictor's as always.
RESIZE, CROP = 40, 32
NETWORK_PY = """
import torch
from torch import nn


class SmallConvNet(nn.Module):
    # Three convolutions and a linear head: enough operations for accuracy control to choose among.
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))
"""


def write_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` noisy photos of blended colour blocks under folder/<a>/ and folder/<b>/, JPEG and PNG,
    of several sizes; returns `folder`."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        corners = rng.integers(0, 256, (2, 2, 3)).astype(np.float32)
        ys, xs = np.linspace(0, 1, height)[:, None, None], np.linspace(0, 1, width)[None, :, None]
        top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
        bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
        pixels = top * (1 - ys) + bottom * ys + rng.normal(0, 25, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        sub = folder / ("a" if i % 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        image.save(sub / f"photo_{i:03d}.{'png' if i % 2 else 'jpg'}")
    return folder


def small_network(seed: int = 0, outliers: bool = False) -> nn.Module:
    """SmallConvNet with seeded weights. `outliers`: the first two convolutions each get one output channel
    of about 1000 that the next layer ignores (its weights zero). One scale per activation tensor then
    leaves the other channels a level or two of int8 each, so int8 changes many answers, and putting one
    layer back in fp32 does not bring them back: the refusal path, whatever NNCF's rounding."""
    namespace: dict = {}
    exec(NETWORK_PY, namespace)  # the same source the command-line tests give as --model-file
    torch.manual_seed(seed)
    network = namespace["SmallConvNet"](len(CLASSES)).eval()
    if outliers:
        convolutions = [m for m in network.features if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv, following in zip(convolutions, convolutions[1:], strict=False):
                conv.bias[0] = 1000.0
                following.weight[:, 0] = 0.0
    return network


def small_pt(path: Path, seed: int = 0, outliers: bool = False) -> Path:
    """A verified Predictor .pt of small_network(seed, outliers) at RESIZE/CROP."""
    network = small_network(seed, outliers)
    export_predictor(Predictor(network, CLASSES, Recipe(resize=(RESIZE,), crop=(CROP, CROP))), path)
    return path


def model_files(folder: Path, seed: int = 0, outliers: bool = False) -> list:
    """build's flags for small_network(seed, outliers) given as the user's own files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "network.py").write_text(NETWORK_PY)
    torch.save(small_network(seed, outliers).state_dict(), folder / "weights.pt")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return [
        *("--model-file", f"{folder / 'network.py'}:SmallConvNet", "--weights", str(folder / "weights.pt")),
        *("--classes", str(folder / "classes.txt"), "--resize", str(RESIZE), "--crop", str(CROP)),
    ]
