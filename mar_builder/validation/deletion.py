"""The deletion test of served explanations: grey out the cells with the most attribution, or as many random cells.

Each photo is split into a GRID_CELLS x GRID_CELLS grid. The explanation (from the server's
/explanations) ranks the cells; the DELETED_FRACTION of cells with the most attribution are filled with
grey, and separately RANDOM_DRAWS sets of as many random cells. A faithful explanation makes the
label's probability drop more when its cells are greyed than when random ones are. Whole cells, not
scattered pixels: scattered grey pixels are noise that knocks a CNN over whatever they cover.

    python -m mar_builder.validation.deletion --mar model_store/classifier.mar PHOTO_OR_DIR... [--json OUT]
"""

import argparse
import io
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import ValidationError
from .in_process import load_pt
from .mar_files import extract_member, read_manifest
from .served import ServedArchive

logger = logging.getLogger(__name__)

GRID_CELLS = 14  # per side
DELETED_FRACTION = 0.15  # of the cells: 29 of 196
GREY = 128  # the fill of a deleted cell, in each channel
RANDOM_DRAWS = 5  # random sets of cells per photo; their mean probability is the control
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class DeletionResult:
    """One photo's deletion test; probabilities are of the explained label, served by the archive."""

    photo: str
    label: str
    probability: float  # the upright photo, as PNG (what the greyed versions are compared with)
    top_deleted: float  # with the cells of most attribution greyed
    random_deleted: float  # mean over RANDOM_DRAWS sets of as many random cells greyed

    @property
    def top_drop(self) -> float:
        return self.probability - self.top_deleted

    @property
    def random_drop(self) -> float:
        return self.probability - self.random_deleted


def cell_attributions(attributions: np.ndarray, height: int, width: int, cells: int = GRID_CELLS) -> np.ndarray:
    """The handler's attribution grid (rows, cols) over an image (height, width), summed into a (cells, cells)
    grid of the same image. Each handler cell's value is spread evenly over its pixels (its edges are at
    round(i * height / rows), as the handler cuts them), then summed per test cell."""
    rows, cols = attributions.shape
    row_edges = np.round(np.arange(rows + 1) * height / rows).astype(int)
    col_edges = np.round(np.arange(cols + 1) * width / cols).astype(int)
    areas = np.outer(np.diff(row_edges), np.diff(col_edges)).clip(min=1)
    density = np.repeat(np.repeat(attributions / areas, np.diff(row_edges), axis=0), np.diff(col_edges), axis=1)
    return _cell_sums(density, cells)


def greyed(image: np.ndarray, chosen: Sequence[int], cells: int = GRID_CELLS) -> np.ndarray:
    """A copy of `image` (H, W, 3) uint8 with the grid cells `chosen` (row-major indices) filled with GREY."""
    out = image.copy()
    height, width = image.shape[:2]
    row_edges = np.round(np.arange(cells + 1) * height / cells).astype(int)
    col_edges = np.round(np.arange(cells + 1) * width / cells).astype(int)
    for index in chosen:
        r, c = divmod(int(index), cells)
        out[row_edges[r] : row_edges[r + 1], col_edges[c] : col_edges[c + 1]] = GREY
    return out


def deletion_test(served: ServedArchive, photo: bytes, name: str, rng: np.random.Generator) -> DeletionResult:
    """Explain `photo` on the served archive, then classify it with its top cells greyed and with random cells
    greyed. Raises ValidationError when the server refuses or fails."""
    assert served.server is not None, "use ServedArchive as a context manager"
    response = served.server.client.explain(served.manifest.model_name, photo)
    if response.status != 200:
        raise ValidationError(f"{name}: /explanations answered {response.status}: {response.body[:200]!r}")
    answer = response.json()
    label = answer["label"]
    index = served.index[label]
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(photo))).convert("RGB"))
    height, width = upright.shape[:2]
    scores = cell_attributions(np.asarray(answer["attributions"], dtype=np.float64), height, width).ravel()
    count = round(DELETED_FRACTION * scores.size)
    top = np.argsort(-scores, kind="stable")[:count]
    randoms = [rng.choice(scores.size, size=count, replace=False) for _ in range(RANDOM_DRAWS)]
    probability = float(served.classify(_png(upright))[index])
    top_deleted = float(served.classify(_png(greyed(upright, top)))[index])
    random_deleted = float(np.mean([float(served.classify(_png(greyed(upright, r)))[index]) for r in randoms]))
    return DeletionResult(name, label, probability, top_deleted, random_deleted)


def run(mar: Path, photos: Sequence[Path], seed: int = 0) -> List[DeletionResult]:
    """The deletion test of every photo on a TorchServe of its own serving a copy of `mar` (all classes answered)."""
    manifest = read_manifest(mar)
    with tempfile.TemporaryDirectory(prefix="mar_builder-deletion-") as tmp:
        _, settings = load_pt(extract_member(mar, manifest.serialized_file, Path(tmp)))
    rng = np.random.default_rng(seed)
    results = []
    with ServedArchive(mar, manifest, settings.class_names) as served:
        for photo in photos:
            results.append(deletion_test(served, photo.read_bytes(), photo.name, rng))
            logger.info("%s", _line(results[-1]))
    return results


def summary(results: Sequence[DeletionResult]) -> Dict[str, Any]:
    """Counts and means over the photos: how often the top cells' drop beats the random cells'."""
    top = np.array([r.top_drop for r in results])
    random = np.array([r.random_drop for r in results])
    return {
        "photos": len(results),
        "top_drop_larger": int((top > random).sum()),
        "mean_probability": float(np.mean([r.probability for r in results])),
        "mean_top_drop": float(top.mean()),
        "mean_random_drop": float(random.mean()),
        "median_top_drop": float(np.median(top)),
        "median_random_drop": float(np.median(random)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mar_builder.validation.deletion", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mar", type=Path, required=True, help="the archive to serve (a copy of it is served)")
    parser.add_argument("photos", nargs="+", type=Path, help="photos, or folders searched for them (recursively)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    parser.add_argument("--json", type=Path, help="also write every photo's result and the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    photos = _photos(args.photos)[: args.limit or None]
    try:
        results = run(args.mar, photos)
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    overall = summary(results)
    print(json.dumps(overall, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": overall, "photos": [asdict(r) for r in results]}, indent=1))
    return 0


def _photos(paths: Sequence[Path]) -> List[Path]:
    found: List[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        else:
            found.append(path)
    return found


def _cell_sums(pixels: np.ndarray, cells: int) -> np.ndarray:
    height, width = pixels.shape
    row_edges = np.round(np.arange(cells + 1) * height / cells).astype(int)
    col_edges = np.round(np.arange(cells + 1) * width / cells).astype(int)
    rows = np.add.reduceat(pixels, row_edges[:-1], axis=0)
    return np.add.reduceat(rows, col_edges[:-1], axis=1)


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _line(result: DeletionResult) -> str:
    return (
        f"{result.photo}: {result.label} p={result.probability:.3f}, top cells greyed -{result.top_drop:.3f}, "
        f"random cells greyed -{result.random_drop:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
