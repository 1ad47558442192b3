"""The Predictor's preprocess on one 12-megapixel decoded photo, per interpolation: uint8 kernels against float.

    .venv/bin/python -m benchmarks.resize_speed [--repeats 10]

One thread, the photo laid out as the handler decodes it (HWC memory, a CHW view), the default recipe's
sizes (resize 256, crop 224); prints the median milliseconds of each mode and its ratio to bilinear.
"""

import argparse
import statistics
import time
import warnings
from typing import Sequence

import torch
from torch import nn

from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe

MODES = ("bilinear", "bicubic", "nearest-exact")


def median_ms(module: torch.jit.ScriptModule, image: torch.Tensor, repeats: int) -> float:
    for _ in range(2):
        module.preprocess(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module.preprocess(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    image = torch.randint(0, 256, (3000, 4000, 3), dtype=torch.uint8).permute(2, 0, 1)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        for mode in MODES:
            scripted = torch.jit.script(Predictor(network, ["a", "b"], Recipe(interpolation=mode)))
            rows.append((f"{mode}, uint8", median_ms(scripted, image, args.repeats)))
        bicubic = torch.jit.script(Predictor(network, ["a", "b"], Recipe(interpolation="bicubic")))
        rows.append(("bicubic, float input (x / 255)", median_ms(bicubic, image.float() / 255, args.repeats)))
    base = rows[0][1]
    print("| preprocess, 4000x3000 photo | median ms | x bilinear |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
