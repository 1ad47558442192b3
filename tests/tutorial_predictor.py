"""The tutorial's own export (../shared/seed/), as it makes it: its Predictor, scripted and saved, with its bugs fixed.

Fixed: `from __future__` moved first, the missing `nn` and `F` imports added, the unused `datasets`
import dropped. Kept: everything that reaches the saved file (Resize([256]), CenterCrop(224),
ConvertImageDtype, Normalize, the softmax in forward, class_names, `.cpu()` then torch.jit.script).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch import nn


class Predictor(nn.Module):
    def __init__(self, model: nn.Module, class_names: list[str], mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model.eval()
        self.class_names = class_names
        self.transforms = nn.Sequential(
            T.Resize(
                [
                    256,
                ]
            ),  # We use single int value inside a list due to torchscript type restrictions
            T.CenterCrop(224),
            T.ConvertImageDtype(torch.float),
            T.Normalize(mean.tolist(), std.tolist()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # 1. apply transforms
            x = self.transforms(x)
            # 2. get the logits
            x = self.model(x)
            # 3. apply softmax
            x = F.softmax(x, dim=1)
            return x


class SmallCNN(nn.Module):
    """A small random CNN standing in for the tutorial's trained one (nothing is downloaded)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


LANDMARKS = ["Eiffel Tower", "Golden Gate Bridge", "Taj Mahal", "Colosseum", "Machu Picchu"]
TUTORIAL_MEAN = torch.tensor([0.5, 0.5, 0.5])
TUTORIAL_STD = torch.tensor([0.5, 0.5, 0.5])


def save_tutorial_pt(
    path: Path, model: nn.Module | None = None, class_names: list[str] | None = None, scripted_model: bool = True
) -> Path:
    """`torch.jit.script(Predictor(model, class_names, mean, std).cpu()).save(path)`, as the tutorial ends.

    Without `model`: a SmallCNN (seed 0) with its output layer scaled so its classes are far apart.
    `scripted_model=False` traces the inner network first (the tutorial's note: "in some cases you do
    have to use tracing"), for networks that TorchScript cannot script.
    """
    names = list(class_names or LANDMARKS)
    if model is None:
        torch.manual_seed(0)
        model = SmallCNN(len(names)).eval()
        with torch.no_grad():
            model.head.weight.mul_(20)
    if not scripted_model:
        with torch.no_grad():
            model = torch.jit.trace(model.eval(), torch.rand(1, 3, 224, 224))
    predictor = Predictor(model, names, TUTORIAL_MEAN, TUTORIAL_STD).cpu()
    scripted_predictor = torch.jit.script(predictor)
    scripted_predictor.save(str(path))
    return path
