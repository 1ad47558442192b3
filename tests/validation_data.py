"""A generated labelled folder (3 colour classes) and a tiny archive that reads the colour of a photo's left half."""

from pathlib import Path
from typing import Dict

import numpy as np
import torch
from PIL import Image

from mar_builder.cli import main as build_main

CLASSES = ["red", "green", "blue"]  # output i of the network; the folder names
COLOURS: Dict[str, tuple] = {"red": (220, 30, 40), "green": (30, 200, 50), "blue": (40, 50, 210)}
NETWORK_PY = """
import torch
from torch import nn


class LeftHalfColour(nn.Module):
    # Logits from the mean colour of the left half of the crop: the class is decided by where a colour is.
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.head = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, :, :, : x.shape[3] // 2].mean((2, 3)))
"""
SIZES = ["--resize", "72", "--crop", "64", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]
PHOTOS_PER_CLASS = 3
ROTATED = "red/rotated.jpg"  # red on the left as stored; EXIF orientation 3 turns it so that blue is on the left
BROKEN = "green/broken.jpg"  # not an image
UNKNOWN = "purple/plum.png"  # a label the archive does not know


def photo(left: str, right: str, seed: int, size=(128, 96)) -> Image.Image:
    """A noisy photo whose left half has one colour and right half another."""
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.int16)
    pixels[:, : width // 2] = COLOURS[left]
    pixels[:, width // 2 :] = COLOURS[right]
    noise = np.random.default_rng(seed).integers(-20, 21, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def write_photos(root: Path) -> Path:
    """root/<class>/*: 3 photos per class (PNG and JPEG, two sizes), one EXIF-rotated photo, one broken
    file and one photo of an unknown class: 10 measurable photos."""
    for i, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for j in range(PHOTOS_PER_CLASS):
            image = photo(name, CLASSES[(i + 1) % 3], seed=10 * i + j, size=(128, 96) if j else (90, 120))
            image.save(root / name / f"{name}_{j}.{'png' if j % 2 else 'jpg'}")
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180 degrees on display
    photo("red", "blue", seed=99).save(root / ROTATED, "JPEG", quality=95, exif=exif.tobytes())
    (root / BROKEN).write_bytes(b"this is not a photo")
    (root / "purple").mkdir()
    photo("red", "blue", seed=7).save(root / UNKNOWN)
    return root


def build_archive(root: Path) -> Path:
    """root/store/colours.mar: LeftHalfColour with weights 20 x identity, top-2 answers."""
    (root / "network.py").write_text(NETWORK_PY)
    weights = {"head.weight": 20 * torch.eye(3), "head.bias": torch.zeros(3)}
    torch.save(weights, root / "weights.pt")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    store = root / "store"
    code = build_main(
        [
            *("build", "--model-store", str(store), "--name", "colours", "--topk", "2"),
            *("--model-file", f"{root / 'network.py'}:LeftHalfColour", "--weights", str(root / "weights.pt")),
            *("--classes", str(root / "classes.txt"), *SIZES),
        ]
    )
    assert code == 0
    return store / "colours.mar"
