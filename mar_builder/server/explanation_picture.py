"""`<name>.explain.png`: a photo at its own size with its explanation's heatmap over it and the label written on it."""

import io
from pathlib import Path
from typing import Any, Dict

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import ServeError

COLORMAP = "inferno"  # matplotlib's perceptually uniform map: dark = little attribution, yellow = most
MAX_OPACITY = 0.7  # of the heatmap over the photo, where attribution is highest; none where it is 0
# Cells above this quantile of the positive attributions all get the map's top colour: one bright cell
# must not leave the rest of the heatmap dark.
SATURATION_QUANTILE = 0.99
FONT = "DejaVu Sans"  # shipped with matplotlib, so the text looks the same on every machine
SUFFIX = ".explain.png"


def explanation_png(photo: bytes, answer: Dict[str, Any]) -> bytes:
    """A PNG of `photo` (encoded image bytes) upright (EXIF rotation applied, as the handler does), at its
    own size, with the heatmap of `answer["attributions"]` (rows, cols) over it and
    "label  probability" in its top-left corner.

    Only positive attributions (pixels that raised the label's probability) are drawn. Raises ServeError
    for an answer that is not an explanation, or a grid whose aspect ratio is not the photo's.
    """
    grid = _grid(answer)
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(photo))).convert("RGB")
    width, height = image.size
    rows, cols = grid.shape
    if abs(rows / cols - height / width) > 1.5 / min(rows, cols):
        raise ServeError(
            f"the attribution grid ({rows}x{cols}) does not have the photo's aspect ratio ({height}x{width})"
        )
    heat = _heat(grid, width, height)
    colors = _colormap()(heat)[..., :3] * 255
    opacity = (heat * MAX_OPACITY)[..., None]
    blended = np.asarray(image, dtype=np.float32) * (1 - opacity) + colors * opacity
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    _caption(picture, f"{answer['label']}  {float(answer['probability']):.1%}")
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def explanation_path(image: Path, out_dir: Path) -> Path:
    """Where the picture of `image` goes: out_dir/<image's name without its extension>.explain.png."""
    return out_dir / f"{image.stem}{SUFFIX}"


def _grid(answer: Any) -> np.ndarray:
    keys = {"label", "probability", "attributions"}
    if not isinstance(answer, dict) or not keys <= set(answer):
        raise ServeError(f"expected an explanation with {sorted(keys)}, got {str(answer)[:200]}")
    grid = np.asarray(answer["attributions"], dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ServeError(f"attributions must be a 2-D grid, got shape {list(grid.shape)}")
    return grid


def _heat(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """Positive attribution per cell, scaled to [0, 1] and square-rooted (so that cells of a tenth of the top
    one's attribution still show at a third of its colour), resized smoothly to the photo's size (H, W)."""
    positive = np.clip(grid, 0, None)
    top = float(np.quantile(positive[positive > 0], SATURATION_QUANTILE)) if (positive > 0).any() else 1.0
    scaled = np.sqrt(np.clip(positive / top, 0, 1)).astype(np.float32)
    resized = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized), 0, 1)


def _colormap() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ServeError("drawing explanations needs matplotlib: `make venv` installs it (with captum)") from e
    return matplotlib.colormaps[COLORMAP]


def _caption(picture: Image.Image, text: str) -> None:
    """`text` in white on a dark box in the top-left corner, its size in proportion to the photo."""
    from matplotlib import font_manager

    size = max(12, min(picture.size) // 18)
    font = ImageFont.truetype(font_manager.findfont(FONT), size)
    draw = ImageDraw.Draw(picture)
    margin = max(2, size // 3)
    left, top, right, bottom = draw.textbbox((margin, margin), text, font=font)
    draw.rectangle((0, 0, right + margin, bottom + margin), fill=(0, 0, 0))
    draw.text((margin, margin), text, fill=(255, 255, 255), font=font)
