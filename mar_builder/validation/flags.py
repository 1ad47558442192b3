"""The flags of `validate`, declared apart from the command so that the command line starts without torch."""

import argparse
from pathlib import Path

from .photos import DEFAULT_LABEL_COLUMN

DEFAULT_MIN_AGREEMENT = 0.99


def add_validate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="labelled photos: DIR/<class name>/*")
    parser.add_argument("--mar", type=Path, required=True, metavar="ARCHIVE", help="the built .mar to validate")
    parser.add_argument(
        "--labels-csv",
        type=Path,
        metavar="FILE",
        help="instead of class subfolders: a CSV with a 'file' column (paths relative to DIR) and a label column; "
        "a relative FILE not found here is looked up in DIR",
    )
    parser.add_argument(
        "--label-column",
        default=DEFAULT_LABEL_COLUMN,
        metavar="NAME",
        help="the --labels-csv column holding class names (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where report.html and summary.json go (default: <name>-validation/ beside the archive)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        metavar="FRACTION",
        help="exit 1 when the served top-1 agrees with the eager top-1 on a smaller fraction of the photos "
        "(default: %(default)s)",
    )
    eager = parser.add_argument_group(
        "the eager network for (a) (without these flags the network inside the archive's .pt stands in for it)"
    )
    eager.add_argument("--default-model", action="store_true", help="the embedded EfficientNet-Lite0 (default archive)")
    eager.add_argument(
        "--hf",
        type=Path,
        metavar="DIR",
        help="a Hugging Face save_pretrained folder, as for build: its model with its own image processor "
        "(AutoImageProcessor) on PIL images",
    )
    eager.add_argument("--arch", metavar="NAME", help="a torchvision architecture, as for build")
    eager.add_argument("--model-file", metavar="FILE.py:NAME", help="your nn.Module, as for build")
    eager.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments for --model-file")
    eager.add_argument("--weights", type=Path, metavar="CKPT", help="the checkpoint, as for build")
    eager.add_argument("--allow-pickle", action="store_true", help="load pickled checkpoints (runs their code)")
    eager.add_argument(
        "--transforms",
        metavar="FILE.py:NAME",
        help="your eval transform, as for build: the eager model's preprocessing (on PIL images), so that a skew "
        "between it and the archive's recipe shows in the report (default: the archive's recipe on PIL images)",
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
