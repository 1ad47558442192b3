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
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from mar_builder.constants import IMAGENET_MEAN, IMAGENET_STD
from mar_builder.model.default_model import DEFAULT_RECIPE, imagenet_class_names, load_default_model
from mar_builder.model.predictor import Predictor

OWN = "its own recipe (resize 256 bilinear, crop 224)"
HALF = ((0.5,) * 3, (0.5,) * 3)


def pil_variants() -> Dict[str, Callable[[Image.Image], torch.Tensor]]:
    bicubic = T.InterpolationMode.BICUBIC
    to_bgr = T.Lambda(lambda x: x.flip(0))
    return {
        OWN: T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(*HALF)]),
        "bicubic instead of bilinear": T.Compose(
            [T.Resize(256, interpolation=bicubic), T.CenterCrop(224), T.ToTensor(), T.Normalize(*HALF)]
        ),
        "resize 232 instead of 256 (torchvision's newer recipes)": T.Compose(
            [T.Resize(232), T.CenterCrop(224), T.ToTensor(), T.Normalize(*HALF)]
        ),
        "squash to 224x224 instead of resize + crop": T.Compose(
            [T.Resize((224, 224)), T.ToTensor(), T.Normalize(*HALF)]
        ),
        "ImageNet mean/std instead of its own": T.Compose(
            [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        ),
        "BGR instead of RGB": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), to_bgr, T.Normalize(*HALF)]),
    }


def labelled_photos(folder: Path) -> List[tuple]:
    with open(folder / "labels.csv", newline="") as f:
        return [(folder / row["file"], int(row["class_index"])) for row in csv.DictReader(f)]


def measure(photos: Sequence[tuple]) -> Dict[str, List[int]]:
    """Each variant's top-1 class index per photo (the .pt row included)."""
    network = load_default_model()
    # Eager: the default network cannot be scripted (the build traces it); the .pt runs the same steps, verified.
    predictor = Predictor(network, imagenet_class_names(), DEFAULT_RECIPE)
    answers: Dict[str, List[int]] = {name: [] for name in pil_variants()}
    answers["this tool's Predictor (uint8 path, its own recipe)"] = []
    variants = pil_variants()
    with torch.no_grad():
        for path, _ in photos:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            batch = torch.stack([transform(image) for transform in variants.values()])
            for name, logits in zip(variants, network(batch), strict=True):
                answers[name].append(int(logits.argmax()))
            pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            answers["this tool's Predictor (uint8 path, its own recipe)"].append(
                int(predictor(pixels.unsqueeze(0))[0].argmax())
            )
    return answers


def table(answers: Dict[str, List[int]], labels: Sequence[int]) -> str:
    own = answers[OWN]
    lines = ["| served with | top-1 accuracy | top-1 answers changed |", "|---|---|---|"]
    for name, got in answers.items():
        accuracy = 100 * np.mean([g == label for g, label in zip(got, labels, strict=True)])
        changed = "–" if name == OWN else f"{100 * np.mean([g != o for g, o in zip(got, own, strict=True)]):.1f} %"
        lines.append(f"| {name} | {accuracy:.1f} % | {changed} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="a folder with labels.csv (file, class_index)")
    args = parser.parse_args(argv)
    photos = labelled_photos(args.photos)
    start = time.perf_counter()
    answers = measure(photos)
    print(table(answers, [label for _, label in photos]))
    print(
        f"\n{len(photos)} photos of {args.photos}, {time.strftime('%Y-%m-%d')}, {platform.processor() or 'CPU'}, "
        f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
