"""Explanations: which pixels made the answer, by Integrated Gradients through the .pt's own preprocess and network.

The frozen (or ONNX Runtime) copy that answers predictions cannot carry gradients, so the worker loads a
second, plain copy of the .pt the first time it is asked for an explanation. For this tool's Predictor
the attributions are computed where the network sees the image (the preprocessed crop, from a black
image's crop to the photo's) with Captum's IntegratedGradients, then carried back to the photo's own
pixels through the .pt's own resize, crop and normalisation (their vector-Jacobian product). Pixels the
crop leaves out get exactly 0: they did not take part in the answer.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch
import torch.nn.functional as F
from request_errors import ExplainerNotInstalled, ExplanationsUnavailable, InvalidRequest

logger = logging.getLogger(__name__)

# The attribution grid has this many cells along the photo's short side (the long side in proportion):
# 32 keeps a cell at 8 of the crop's pixels for the usual resize 256 / crop 224, finer than any object.
GRID_SHORT_SIDE = 32
# IG points (crops) per forward and backward pass: 8 crops of 224 px through EfficientNet-Lite0 take
# about 0.1 GB of activations.
CROP_STEPS_PER_PASS = 8
# Attributions are rounded to this many significant digits in the JSON answer (float32 carries ~7).
SIGNIFICANT_DIGITS = 4
# Where a request names the class to explain: a query or form field, or a JSON body's top-level key.
TARGET_FIELD = "target"
CAPTUM_HINT = "pip install captum (the archive's requirements.txt pins it; TorchServe installs it per model)"


class Explainer:
    """Integrated Gradients of one class's probability, for one image at a time, in a separate copy of the .pt.

    `steps` is IG's number of points on the path from the black image to the photo (Gauss-Legendre, as
    Captum integrates by default). A Predictor's points are crops, CROP_STEPS_PER_PASS to a forward and
    backward pass; a wrapped classifier's are whole photos, one a pass: the memory an explanation takes
    stays bounded.
    """

    def __init__(self, model_path: str, device: torch.device, steps: int) -> None:
        self.model_path = model_path
        self.device = device
        self.steps = steps
        self._model: torch.jit.ScriptModule | None = None
        self._integrated_gradients: Any = None

    def attribution_grid(self, image: torch.Tensor, target: int) -> torch.Tensor:
        """The attributions of `image` (uint8, (3, H, W), upright) to class `target`, summed over cells.

        Returns float32 (rows, cols): `rows` and `cols` follow the image's aspect ratio, GRID_SHORT_SIDE
        cells along its short side (fewer for a tiny image); cell (i, j) covers pixel rows
        round(i * H / rows) to round((i + 1) * H / rows), columns likewise. A cell's value is the
        summed attribution of its pixels, in units of the class's probability: positive where the
        pixels raise it. All cells together add up to about p(target | image) - p(target | black image)
        (IG's completeness, within its integration error). Raises ExplanationsUnavailable or ExplainerNotInstalled.
        """
        pixels = self.attribution_map(image, target)
        return cell_sums(pixels, grid_shape(pixels.shape[0], pixels.shape[1]))

    def attribution_map(self, image: torch.Tensor, target: int) -> torch.Tensor:
        """Per-pixel attributions (H, W) float32 of `image` (uint8 (3, H, W)) to class `target`."""
        model, integrated_gradients = self._loaded()
        photo = image.to(self.device).float().div(255).unsqueeze(0)  # as ConvertImageDtype scales uint8
        if not _is_predictor(model):
            # A classifier served through its own forward (float images in [0, 1] to probabilities):
            # IG on the photo's own pixels, from a black image.
            attributions = integrated_gradients.attribute(
                photo, baselines=torch.zeros_like(photo), target=target, n_steps=self.steps, internal_batch_size=1
            )
            return attributions.detach()[0].sum(0).float().cpu()
        with torch.no_grad():
            crop = model.transforms(photo)
            black = model.transforms(torch.zeros_like(photo))
        attributions = integrated_gradients.attribute(
            crop, baselines=black, target=target, n_steps=self.steps, internal_batch_size=CROP_STEPS_PER_PASS
        ).detach()
        return _to_photo_pixels(model.transforms, photo, attributions.sum(1, keepdim=True)).cpu()

    def _loaded(self) -> tuple[torch.jit.ScriptModule, Any]:
        if self._model is None:
            try:
                from captum.attr import IntegratedGradients
            except ImportError as e:
                raise ExplainerNotInstalled(f"explanations need Captum, not installed in this worker: {CAPTUM_HINT}") from e
            start = time.perf_counter()
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream but supported in the pinned torch; it is our format.
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
                model = torch.jit.load(self.model_path, map_location=self.device).eval()
            self._integrated_gradients = IntegratedGradients(_probabilities(model))
            self._model = model
            kind = "Predictor" if _is_predictor(model) else "classifier served through its own forward"
            logger.info(
                "explanations: loaded a plain copy of %s (%s) in %.2f s; Integrated Gradients, %d steps",
                self.model_path,
                kind,
                time.perf_counter() - start,
                self.steps,
            )
        return self._model, self._integrated_gradients


def _is_predictor(model: torch.jit.ScriptModule) -> bool:
    """This tool's Predictor (its preprocessing in `transforms`, its network in `model`, softmax after);
    anything else is a ForwardAdapter around a classifier whose `model` maps [0, 1] images to probabilities."""
    return hasattr(model, "transforms")


def _probabilities(model: torch.jit.ScriptModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function IG differentiates: a batch to probabilities (N, classes), with gradients.

    The Predictor's `classify` runs its network under torch.no_grad(), so its network is called here and
    followed by the same softmax; a wrapped classifier's whole forward is called. One that computes
    without gradients (a forward under torch.no_grad(), as the tutorial's) cannot be explained.
    """
    network = model.model
    predictor = _is_predictor(model)

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        output = network(batch)
        if not output.requires_grad:
            raise ExplanationsUnavailable(
                "this model computes without gradients (its forward runs under torch.no_grad()), which "
                "explanations need: export it as this tool's Predictor (build --pt FILE --rebuild), or "
                "drop torch.no_grad() from its forward"
            )
        return F.softmax(output, dim=1) if predictor else output

    return probabilities


def _to_photo_pixels(transforms: Any, photo: torch.Tensor, crop_map: torch.Tensor) -> torch.Tensor:
    """Carry a crop's attribution map (1, 1, h, w) back to the photo's pixels (H, W) through `transforms`.

    Resize, crop and normalisation are linear in the pixels; the vector-Jacobian product of the same map
    on each channel spreads each crop pixel's attribution over the photo pixels it was made from,
    scaled by the normalisation's mean 1/std. Dividing by the product of a map of ones (which carries
    that same scale times each pixel's weight) leaves the spread, so the totals are kept.
    """
    channels = photo.shape[1]
    source = photo.detach().requires_grad_(True)
    crop = transforms(source)
    cotangents = torch.cat([crop_map.expand_as(crop), torch.ones_like(crop)])
    spread = []
    for cotangent in cotangents:
        (grad,) = torch.autograd.grad(crop, source, cotangent.unsqueeze(0), retain_graph=True)
        spread.append(grad[0].sum(0))
    pixels, ones = spread
    scale = ones.sum() / (crop.shape[-2] * crop.shape[-1])
    assert channels == crop.shape[1] and float(scale) > 0, "the .pt's transforms must keep the channels"
    return (pixels / scale).detach()


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the attribution grid for an image (H, W): GRID_SHORT_SIDE cells along the short side."""
    short = min(height, width, GRID_SHORT_SIDE)
    if height <= width:
        return short, max(1, min(width, round(width * short / height)))
    return max(1, min(height, round(height * short / width))), short


def cell_sums(pixels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Sum a map (H, W) over a grid of `shape` cells, edges at round(i * H / rows): exact, every pixel in one cell."""
    height, width = pixels.shape
    rows, cols = shape
    row_edges = [round(i * height / rows) for i in range(rows + 1)]
    col_edges = [round(j * width / cols) for j in range(cols + 1)]
    # An integral image: each cell's sum is four lookups.
    integral = F.pad(pixels.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    r = torch.tensor(row_edges)
    c = torch.tensor(col_edges)
    sums = integral[r[1:]][:, c[1:]] - integral[r[:-1]][:, c[1:]] - integral[r[1:]][:, c[:-1]] + integral[r[:-1]][:, c[:-1]]
    return sums.float()


def rounded_grid(grid: torch.Tensor) -> List[List[float]]:
    """The grid as JSON rows, each value to SIGNIFICANT_DIGITS significant digits."""
    return [[float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in row] for row in grid.tolist()]


def requested_target(request: Mapping[str, Any], body: Any, class_names: Sequence[str]) -> int | None:
    """The class index a request asks to explain, None when it names none (explain the predicted class).

    The `target` comes from the query string or a form field (`?target=tabby`, `-F target=tabby`), or a JSON
    body's top-level "target": a label string, or (JSON only) an integer class index as TorchServe's stock
    handler takes. Raises InvalidRequest for a label the model does not have or an index out of range.
    """
    value = request.get(TARGET_FIELD)
    if value is None and isinstance(body, dict):
        value = body.get(TARGET_FIELD)
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRequest(f'"target" must be a label (a string) or a class index, got {type(value).__name__}')
    if isinstance(value, int):
        if not 0 <= value < len(class_names):
            raise InvalidRequest(f'"target" index {value} is out of range: the model has {len(class_names)} classes')
        return value
    if value not in class_names:
        shown = ", ".join(repr(n) for n in class_names[:5])
        raise InvalidRequest(f'"target" {value[:100]!r} is not one of the model\'s {len(class_names)} labels ({shown}, ...)')
    return list(class_names).index(value)


def explanation(label: str, probability: float, grid: torch.Tensor) -> Dict[str, Any]:
    """The answer for one image: {"label", "probability", "attributions": [[...], ...] (rows, cols)}."""
    return {"label": label, "probability": probability, "attributions": rounded_grid(grid)}
