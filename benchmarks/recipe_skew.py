"""What serving with another recipe costs: top-1 accuracy and answers changed, on labelled ImageNet photos.

The default model (EfficientNet-Lite0, eager) sees each photo through its own recipe (resize 256 bilinear,
crop 224, mean and std 0.5) and through the usual wrong guesses, all as torchvision transforms on PIL images;
one more row is this tool's Predictor on the decoded uint8 pixels (the .pt's path, its own recipe).
Prints a Markdown table.

    .venv/bin/python -m benchmarks.recipe_skew --photos /work/shared/imagenet-sample
"""

import argparse
import csv
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from mar_builder.constants import IMAGENET_MEAN, IMAGENET_STD
from mar_builder.model.default_model import DEFAULT_RECIPE, imagenet_class_names, load_default_model
from mar_builder.model.predictor import Predictor

OWN = "its own recipe (resize 256 bilinear, crop 224)"
HALF = ((0.5,) * 3, (0.5,) * 3)
PREDICTOR = "this tool's Predictor (uint8 path, its own recipe)"


def pil_variants(image: Image.Image) -> Dict[str, torch.Tensor]:
    """Each row's network input for one PIL photo; rows that share their resize and crop compute them once."""
    crop = T.CenterCrop(224)
    resized = T.ToTensor()(crop(T.Resize(256)(image)))
    half, imagenet = T.Normalize(*HALF), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    bicubic = T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)
    return {
        OWN: half(resized),
        "bicubic instead of bilinear": half(T.ToTensor()(crop(bicubic(image)))),
        "resize 232 instead of 256 (torchvision's newer recipes)": half(T.ToTensor()(crop(T.Resize(232)(image)))),
        "squash to 224x224 instead of resize + crop": half(T.ToTensor()(T.Resize((224, 224))(image))),
        "ImageNet mean/std instead of its own": imagenet(resized),
        "BGR instead of RGB": half(resized.flip(0)),
    }


def labelled_photos(folder: Path) -> List[tuple]:
    with open(folder / "labels.csv", newline="") as f:
        return [(folder / row["file"], int(row["class_index"])) for row in csv.DictReader(f)]


def measure(photos: Sequence[tuple]) -> Dict[str, List[int]]:
    """Each row's top-1 class index per photo."""
    network = load_default_model()
    # Eager: the default network cannot be scripted (the build traces it); the .pt runs the same steps, verified.
    predictor = Predictor(network, imagenet_class_names(), DEFAULT_RECIPE)
    answers: Dict[str, List[int]] = {}
    with torch.no_grad():
        for done, (path, _) in enumerate(photos):
            if done and done % 25 == 0:
                print(f"{done} of {len(photos)} photos", file=sys.stderr, flush=True)
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            inputs = pil_variants(image)
            pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            inputs[PREDICTOR] = predictor.preprocess(pixels)
            for name, logits in zip(inputs, network(torch.stack(list(inputs.values()))), strict=True):
                answers.setdefault(name, []).append(int(logits.argmax()))
    return answers


def table(answers: Dict[str, List[int]], labels: Sequence[int]) -> str:
    own = answers[OWN]
    lines = ["| served with | top-1 accuracy | top-1 answers changed |", "|---|---|---|"]
    for name, got in answers.items():
        accuracy = 100 * np.mean([g == label for g, label in zip(got, labels, strict=True)])
        changed = "–" if name == OWN else f"{100 * np.mean([g != o for g, o in zip(got, own, strict=True)]):.1f} %"
        lines.append(f"| {name} | {accuracy:.1f} % | {changed} |")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="a folder with labels.csv (file, class_index)")
    args = parser.parse_args(argv)
    photos = labelled_photos(args.photos)
    start = time.perf_counter()
    answers = measure(photos)
    print(table(answers, [label for _, label in photos]))
    print(
        f"\n{len(photos)} photos of {args.photos}, {time.strftime('%Y-%m-%d')}, {cpu_name()}, "
        f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
