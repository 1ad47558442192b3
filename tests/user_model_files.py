"""A user's files for the command-line tests: a model source file, checkpoints and class lists."""

from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torchvision

from mar_builder.cli import main
from mar_builder.model.model_sources import build_from_model_file

NETWORKS_PY = """
import collections

import torch
from torch import nn

Features = collections.namedtuple("Features", "pooled")


class Scriptable(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class Unscriptable(Scriptable):
    # A namedtuple built from **kwargs: torch.jit.script refuses it, tracing works.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = Features(**{"pooled": torch.relu(self.conv(x)).mean((2, 3))})
        return self.head(parts.pooled)
"""
ARCH = "squeezenet1_1"
SMALL = ["--resize", "72", "--crop", "64"]  # keeps the torchvision network fast
NAMES = ["Eiffel Tower", "Big Ben", "Taj Mahal", "Colosseum"]


def write_user_files(directory: Path) -> Path:
    """The network source, a checkpoint of a torchvision network (seed 0), one class name per line."""
    (directory / "networks.py").write_text(NETWORKS_PY)
    torch.manual_seed(0)
    arch = torchvision.models.get_model(ARCH, num_classes=len(NAMES)).eval()
    torch.save({"state_dict": arch.state_dict(), "epoch": 9}, directory / "arch.ckpt")
    (directory / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return directory


def custom_network(files: Path, name: str, num_classes: int) -> torch.nn.Module:
    """The user's class from networks.py with random 'trained' weights, saved as files/<name>.pt."""
    torch.manual_seed(1)
    network = build_from_model_file(f"{files}/networks.py:{name}", {"num_classes": num_classes}).eval()
    torch.save(network.state_dict(), files / f"{name}.pt")
    return network


def run(argv: Sequence[object], capsys) -> Tuple[int, str]:
    """main() in-process: its exit code and what it printed on stderr."""
    arguments: List[str] = [str(a) for a in argv]
    code = main(arguments)
    return code, capsys.readouterr().err
