"""The image stack for the tests: TorchServe 0.12.0's official images' Python 3.9 and pins (requirements-image.txt,
`make image-venv`), and the archives served on it. Add an archive to IMAGE_STACK_ARCHIVES to have it served there
and compared with the main stack (tests/image_stack/test_image_stack_e2e.py)."""

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import pytest
import torch
import torchvision
from tutorial_predictor import save_tutorial_pt
from user_model_files import NETWORKS_PY, custom_network

from mar_builder.constants import REPO_ROOT

IMAGE_VENV = REPO_ROOT / ".venv-image"
IMAGE_PYTHON = IMAGE_VENV / "bin" / "python"
IMAGE_TORCHSERVE = IMAGE_VENV / "bin" / "torchserve"
IMAGE_STAMP = IMAGE_VENV / ".installed"  # written by `make image-venv` once every pin is installed

ARCH = "squeezenet1_1"
CLASSES = ["Eiffel Tower", "Big Ben", "Taj Mahal", "Colosseum"]
SMALL = ["--resize", "160", "--crop", "128"]
NUM_CLASSES_KWARGS = f'{{"num_classes": {len(CLASSES)}}}'


def require_image_stack() -> None:
    """Fail, never skip, when the image stack is not installed: `make test` installs it first."""
    if not IMAGE_STAMP.exists():
        pytest.fail(
            f"the image stack is not installed ({IMAGE_VENV}): run `make image-venv` (Python 3.9 and "
            "requirements-image.txt; `make test` does it)",
            pytrace=False,
        )


def run_in_image_stack(script: str, *args: object, timeout: float = 300) -> str:
    """Run `script` with the image stack's Python (isolated: nothing of this checkout is importable); its stdout."""
    require_image_stack()
    result = subprocess.run(
        [str(IMAGE_PYTHON), "-I", "-c", script, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"in the image stack: {result.stderr[-3000:]}"
    return result.stdout


@dataclass(frozen=True)
class ImageStackArchive:
    """An archive the image-stack tests build with `build --name NAME ...` and serve on both stacks."""

    name: str
    build_args: Callable[[Path], List[str]]  # the sources folder (write_sources) -> build's flags after --name


def write_sources(folder: Path) -> Path:
    """What the archives below are built from: a torchvision checkpoint, a model file, a tutorial .pt."""
    (folder / "networks.py").write_text(NETWORKS_PY)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    torch.manual_seed(0)
    arch = torchvision.models.get_model(ARCH, num_classes=len(CLASSES)).eval()
    with torch.no_grad():
        arch.classifier[1].weight.mul_(10)  # classes far apart: the top-1 comparison means something
    torch.save({"state_dict": arch.state_dict(), "epoch": 9}, folder / "arch.ckpt")
    unscriptable = custom_network(folder, "Unscriptable", len(CLASSES))  # saves Unscriptable.pt
    with torch.no_grad():
        unscriptable.head.weight.mul_(10)
    torch.save(unscriptable.state_dict(), folder / "Unscriptable.pt")
    save_tutorial_pt(folder / "tutorial.pt")
    return folder


# The default archive (classifier.mar) comes from the session's model_store fixture, built once for every test.
IMAGE_STACK_ARCHIVES = [
    ImageStackArchive(
        "arch",
        lambda src: [
            *("--arch", ARCH, "--weights", str(src / "arch.ckpt")),
            *("--classes", str(src / "classes.txt"), *SMALL),
        ],
    ),
    ImageStackArchive(  # a network TorchScript cannot script: traced
        "traced",
        lambda src: [
            *("--model-file", f"{src}/networks.py:Unscriptable", "--model-kwargs", NUM_CLASSES_KWARGS),
            *("--weights", str(src / "Unscriptable.pt")),
            *("--classes", str(src / "classes.txt"), *SMALL),
        ],
    ),
    ImageStackArchive(  # the recipes' other kernels and the sigmoid head (issue 26)
        "bicubic-bgr-sigmoid",
        lambda src: [
            *("--arch", ARCH, "--weights", str(src / "arch.ckpt")),
            *("--classes", str(src / "classes.txt"), *SMALL),
            *("--interpolation", "bicubic", "--channel-order", "BGR", "--head", "sigmoid"),
        ],
    ),
    ImageStackArchive(
        "nearest-exact",
        lambda src: [
            *("--arch", ARCH, "--weights", str(src / "arch.ckpt")),
            *("--classes", str(src / "classes.txt"), *SMALL, "--interpolation", "nearest-exact"),
        ],
    ),
    ImageStackArchive("tutorial", lambda src: ["--pt", str(src / "tutorial.pt")]),  # served through its forward
    ImageStackArchive("tutorial-rebuilt", lambda src: ["--pt", str(src / "tutorial.pt"), "--rebuild"]),
]
