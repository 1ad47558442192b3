"""Explanations: which pixels made the answer, by gradients through the .pt's own preprocess and network.

The method is Captum's InputXGradient relative to a grey image: each pixel's (value - grey) times the
gradient of the explained class's probability with respect to it, summed over the channels and then over
the cells of a grid. A cell's sum is the first-order estimate of how far the probability would fall if
the cell were painted grey. The gradient flows through the .pt's own resize, crop and normalisation into
its network, so it lands on the photo's own pixels; pixels the crop leaves out get exactly 0, since they
took no part in the answer. One forward and one backward pass per image: on the deletion test it beat
the plain gradient's magnitude (Saliency), SmoothGrad (8 passes) and Integrated Gradients (16 passes),
which fails where the softmax saturates (docs/explanations.md).

The frozen (or ONNX Runtime) copy that answers predictions carries no gradients, so the worker loads a
second, plain copy of the .pt the first time it is asked for an explanation.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch
import torch.nn.functional as F
from request_errors import ExplainerNotInstalled, ExplanationsUnavailable, InvalidRequest, TooManyImages

logger = logging.getLogger(__name__)

# The attribution grid has this many cells along the photo's short side (the long side in proportion):
# 32 keeps a cell at 8 of the crop's pixels for the usual resize 256 / crop 224, finer than any object.
GRID_SHORT_SIDE = 32
# Attributions are rounded to this many significant digits in the JSON answer (float32 carries ~7).
SIGNIFICANT_DIGITS = 4
# Where a request names the class to explain: a form field or a JSON body's top-level key (as TorchServe's
# stock handler reads it), or this header for a raw upload. TorchServe does not hand /predictions' and
# /explanations' query strings to the handler.
TARGET_FIELD = "target"
TARGET_HEADER = "x-explain-target"
# The reference image the attributions are relative to, in [0, 1]: mid grey, what the deletion test paints.
GREY = 128 / 255
CAPTUM_HINT = "pip install captum (the archive's requirements.txt pins it; TorchServe installs it per model)"


class Explainer:
    """Gradient x (input - grey) of one class's probability over one image, in a separate, plain copy of the .pt."""

    def __init__(self, model_path: str, device: torch.device) -> None:
        self.model_path = model_path
        self.device = device
        self._model: torch.jit.ScriptModule | None = None
        self._input_x_gradient: Any = None

    def attribution_grid(self, image: torch.Tensor, target: int) -> torch.Tensor:
        """The attributions of `image` (uint8, (3, H, W), upright) to class `target`, summed over cells.

        Returns float32 (rows, cols): `rows` and `cols` follow the image's aspect ratio, GRID_SHORT_SIDE
        cells along its short side (fewer for a tiny image); cell (i, j) covers pixel rows
        round(i * H / rows) to round((i + 1) * H / rows), columns likewise. A cell's value is the sum over
        its pixels and channels of (pixel - GREY) x d probability / d pixel, pixels scaled to [0, 1], in
        units of the class's probability: positive where the pixels raise it (greying them would lower
        it), negative where they lower it. Raises ExplanationsUnavailable or ExplainerNotInstalled.
        """
        pixels = self.attribution_map(image, target)
        return cell_sums(pixels, grid_shape(pixels.shape[0], pixels.shape[1]))

    def attribution_map(self, image: torch.Tensor, target: int) -> torch.Tensor:
        """Per-pixel attributions (H, W) float32 of `image` (uint8 (3, H, W)) to class `target`."""
        input_x_gradient = self._loaded()
        photo = image.to(self.device).float().div(255).unsqueeze(0)  # as ConvertImageDtype scales uint8
        # The method's input is the photo minus grey; the function adds grey back before the .pt sees it.
        attributions = input_x_gradient.attribute((photo - GREY).requires_grad_(True), target=target)
        return attributions.detach()[0].sum(0).float().cpu()

    def _loaded(self) -> Any:
        if self._model is None:
            try:
                from captum.attr import InputXGradient
            except ImportError as e:
                raise ExplainerNotInstalled(
                    f"explanations need Captum, not installed in this worker: {CAPTUM_HINT}"
                ) from e
            start = time.perf_counter()
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream but supported in the pinned torch; it is our format.
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
                model = torch.jit.load(self.model_path, map_location=self.device).eval()
            probabilities = _probabilities(model)
            self._input_x_gradient = InputXGradient(lambda shifted: probabilities(shifted + GREY))
            self._model = model
            kind = "Predictor" if _is_predictor(model) else "classifier served through its own forward"
            logger.info(
                "explanations: loaded a plain copy of %s (%s) in %.2f s",
                self.model_path,
                kind,
                time.perf_counter() - start,
            )
        return self._input_x_gradient


def _is_predictor(model: torch.jit.ScriptModule) -> bool:
    """This tool's Predictor (its preprocessing in `transforms`, its network in `model`, its head after);
    anything else is a ForwardAdapter around a classifier whose `model` maps [0, 1] images to probabilities."""
    return hasattr(model, "transforms")


def _probabilities(model: torch.jit.ScriptModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function differentiated: photos (N, 3, H, W) float in [0, 1] to probabilities (N, classes).

    A Predictor's `preprocess` and `classify` run under torch.no_grad(), so its `transforms` and network
    are called here, followed by the same head as its `classify` (softmax, or sigmoid; a one-logit pair
    answers [1 - p, p]); a wrapped classifier's whole forward is called. One
    that computes without gradients (a forward under torch.no_grad(), as the tutorial's) cannot be
    explained.
    """
    if not hasattr(model, "model"):
        raise ExplanationsUnavailable(
            "this model's network cannot be reached for gradients: its .pt was saved frozen (so that torch 2.4, "
            "TorchServe's images, loads it), which keeps only its forward, run without gradients: export it as "
            "this tool's Predictor (build --pt FILE --rebuild)"
        )
    network = model.model
    transforms = model.transforms if _is_predictor(model) else None
    # Predictors exported before the sigmoid head existed carry no `head`: they are all softmax.
    sigmoid = getattr(model, "head", "softmax") == "sigmoid"
    one_logit_pair = bool(getattr(model, "one_logit_pair", False))

    def head(logits: torch.Tensor) -> torch.Tensor:
        if not sigmoid:
            return F.softmax(logits, dim=1)
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p], dim=1) if one_logit_pair else p

    def probabilities(photos: torch.Tensor) -> torch.Tensor:
        output = network(photos) if transforms is None else head(network(transforms(photos)))
        if not output.requires_grad:
            raise ExplanationsUnavailable(
                "this model computes without gradients (its forward runs under torch.no_grad()), which "
                "explanations need: export it as this tool's Predictor (build --pt FILE --rebuild), or "
                "drop torch.no_grad() from its forward"
            )
        return output

    return probabilities


def check_explainable(explainer: Explainer | None, protocol: str | None) -> None:
    """Refuse an explanation request that this worker cannot answer, before anything is decoded: explanations
    turned off (`explainer` None; ExplanationsUnavailable) or a v2 request (InvalidRequest)."""
    if explainer is None:
        raise ExplanationsUnavailable(
            "explanations are turned off for this model (handler.explanations: false in its model-config.yaml)"
        )
    if protocol == "v2":
        raise InvalidRequest(
            "the Open Inference Protocol (v2) defines no explain; ask /explanations/<model> or KServe v1 "
            "/v1/models/<model>:explain"
        )


def check_explanation_count(count: int, limit: int) -> None:
    """TooManyImages when an explanation request holds more than `limit` images."""
    if count > limit:
        raise TooManyImages(
            f"the request holds {count} images to explain; the limit is {limit} "
            "(handler.max_images_per_explanation): send them in several requests"
        )


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
    sums = (
        integral[r[1:]][:, c[1:]]
        - integral[r[:-1]][:, c[1:]]
        - integral[r[1:]][:, c[:-1]]
        + integral[r[:-1]][:, c[:-1]]
    )
    return sums.float()


def rounded_grid(grid: torch.Tensor) -> List[List[float]]:
    """The grid as JSON rows, each value to SIGNIFICANT_DIGITS significant digits."""
    return [[float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in row] for row in grid.tolist()]


def requested_target(
    request: Mapping[str, Any], body: Any, headers: Mapping[str, Any], class_names: Sequence[str]
) -> int | None:
    """The class index a request asks to explain, None when it names none (explain the predicted class).

    The target comes from a form field (`-F target=tabby`), a JSON body's top-level "target", or the
    header `X-Explain-Target: tabby`: a label string, or (JSON only) an integer class index as TorchServe's
    stock handler takes. Raises InvalidRequest for a label the model does not have or an index out of range.
    """
    value = request.get(TARGET_FIELD)
    if value is None and isinstance(body, dict):
        value = body.get(TARGET_FIELD)
    if value is None:
        value = next((v for k, v in headers.items() if str(k).lower() == TARGET_HEADER), None)
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
        raise InvalidRequest(
            f'"target" {value[:100]!r} is not one of the model\'s {len(class_names)} labels ({shown}, ...)'
        )
    return list(class_names).index(value)


def explanation(label: str, probability: float, grid: torch.Tensor) -> Dict[str, Any]:
    """The answer for one image: {"label", "probability", "attributions": [[...], ...] (rows, cols)}."""
    return {"label": label, "probability": probability, "attributions": rounded_grid(grid)}
