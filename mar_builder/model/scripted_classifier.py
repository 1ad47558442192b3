"""Any TorchScript classifier with class_names (the tutorial's Predictor): checked, then served through its forward."""

import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Sequence

import torch
from torch import nn

from ..constants import FULL_DECODE_RESIZE_SIZE
from ..errors import ExportError, ModelSourceError, first_line
from .class_names import validate_class_names
from .export import random_images, staged_file, torchscript_deprecation_acknowledged
from .oldest_torch import OLDEST_TORCH, frozen_for_handler, missing_in_oldest_torch

logger = logging.getLogger(__name__)

PROBABILITY_TOLERANCE = 1e-3  # how far from 1 a row of probabilities may sum
ADAPTER_TOLERANCE = 1e-5  # served rows against the module's own forward on the same pixels
# What the handler does with the .pt, run in `python -I`: nothing of this package (or the cwd) is importable there.
STANDALONE_CHECK = """
import sys, torch
adapter = torch.jit.load(sys.argv[1], map_location="cpu").eval()
kept = ["preprocess", "classify", "class_names", "resize_size"]
frozen = torch.jit.freeze(torch.jit.load(sys.argv[1], map_location="cpu").eval(), preserved_attrs=kept)
images = torch.load(sys.argv[2], weights_only=True)
out = {}
with torch.no_grad():
    for name, m in (("loaded", adapter), ("frozen", frozen)):
        out[name] = m.classify(torch.stack([m.preprocess(image) for image in images]))
out["class_names"] = list(adapter.class_names)
torch.save(out, sys.argv[3])
"""


class ForwardAdapter(nn.Module):
    """The handler's interface (preprocess, classify, class_names, resize_size) around a classifier whose
    own `forward` maps float images (N, 3, H, W) in [0, 1] to probabilities (N, classes).

    The module stays the single source of preprocessing truth: `preprocess` runs its whole `forward`
    on one image, so images of different sizes in one server batch each get exactly what
    `m(T.ToTensor()(img).unsqueeze(0))` gives them, and `classify` only stacks the rows.
    """

    def __init__(self, module: nn.Module, class_names: Sequence[str]) -> None:
        super().__init__()
        self.model = module
        self.class_names: List[str] = list(class_names)
        # The module resizes inside forward, at a size the handler cannot read: a JPEG decoded at reduced
        # scale would change its input. The handler drafts only while the short side stays at least
        # jpeg_draft_factor x resize_size, and no image is that large, so every JPEG decodes in full.
        self.resize_size: int = FULL_DECODE_RESIZE_SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float images (N, 3, H, W) in [0, 1] to the module's probabilities (N, classes)."""
        with torch.no_grad():
            return self.model(x)

    @torch.jit.export
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 image (3, H, W) to its probabilities (classes,): forward on image / 255, as T.ToTensor scales."""
        if image.dim() != 3 or image.size(0) != 3:
            raise ValueError(f"expected one image shaped (3, H, W), got {list(image.shape)}")
        with torch.no_grad():
            return self.model(image.float().div(255).unsqueeze(0))[0]

    @torch.jit.export
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """The stacked rows of preprocess (N, classes), returned as they are."""
        return batch


def to_tensor(image: torch.Tensor) -> torch.Tensor:
    """A uint8 (3, H, W) image as T.ToTensor() gives it: float32 in [0, 1], a batch of one."""
    return image.float().div(255).unsqueeze(0)


def check_scripted_classifier(
    module: torch.jit.ScriptModule, path: Path, given_names: Sequence[str] | None = None
) -> List[str]:
    """Check a TorchScript classifier not exported by this tool; return its class names.

    It needs `class_names` (a list of strings; `given_names`, from --classes, stand in for a module that
    has none, such as a traced one) and a `forward` that maps float images (N, 3, H, W) in [0, 1] to
    probabilities (N, len(class_names)), rows summing to 1, for images of several sizes.
    Raises ModelSourceError (or ClassNamesError) saying what to fix.
    """
    if given_names is not None:
        if hasattr(module, "class_names") and list(module.class_names) != list(given_names):
            raise ModelSourceError(
                f"--pt: {path} has class_names of its own, which differ from those given: drop --classes"
            )
        class_names = validate_class_names(list(given_names), "the class names given")
    elif not hasattr(module, "class_names"):
        raise ModelSourceError(
            f"--pt: {path} has no class_names: give the scripted module a `class_names` attribute "
            "(a list of strings, one per output), as the tutorial's Predictor has, or pass --classes FILE "
            "(a traced module cannot keep one)"
        )
    else:
        names = module.class_names
        if not isinstance(names, (list, tuple)):
            raise ModelSourceError(f"--pt: {path}'s class_names is a {type(names).__name__}, not a list of strings")
        class_names = validate_class_names(list(names), f"{path}'s class_names")
    images = random_images()
    # Each image alone, then a batch of two: forward must take batches, as the tutorial calls it.
    pair = torch.cat([to_tensor(images[0]), to_tensor(images[0].flip(-1))])
    batches = [to_tensor(image) for image in images] + [pair]
    for batch in batches:
        h, w = batch.shape[-2:]
        try:
            with torch.no_grad():
                probabilities = module(batch)
        except Exception as e:
            raise ModelSourceError(
                f"--pt: {path}'s forward fails on a float batch {list(batch.shape)} in [0, 1] "
                f"(as T.ToTensor() gives): {first_line(e)}"
            ) from e
        if not isinstance(probabilities, torch.Tensor) or probabilities.dim() != 2:
            what = list(probabilities.shape) if isinstance(probabilities, torch.Tensor) else type(probabilities)
            raise ModelSourceError(f"--pt: {path}'s forward returns {what}; expected (images, classes) probabilities")
        if tuple(probabilities.shape) != (batch.shape[0], len(class_names)):
            raise ModelSourceError(
                f"--pt: {path} answers shape {list(probabilities.shape)} for {batch.shape[0]} image(s) of {h}x{w}, "
                f"but has {len(class_names)} class names"
            )
        totals = probabilities.float().sum(dim=1)
        if bool((probabilities < 0).any()) or not bool(((totals - 1).abs() <= PROBABILITY_TOLERANCE).all()):
            raise ModelSourceError(
                f"--pt: {path}'s forward returns logits, not probabilities (a row sums to {float(totals[0]):.4g}): "
                "end forward with F.softmax(x, dim=1), as the tutorial's Predictor does"
            )
    return class_names


def export_adapter(module: torch.jit.ScriptModule, class_names: Sequence[str], output: Path) -> None:
    """Script a ForwardAdapter around `module`, check it in a fresh `python -I` against `module`, write `output`.

    Where the module's code calls operators that torch 2.4.0 (TorchServe 0.12.0's images) lacks, the adapter
    is saved frozen, as the handler freezes it, when that drops them: a scripted T.Resize carries every
    F.interpolate mode's branch, lanczos's among them, and freezing keeps only the mode it uses.
    """
    with torchscript_deprecation_acknowledged():
        scripted = torch.jit.script(ForwardAdapter(module, class_names).eval())
        missing = missing_in_oldest_torch(scripted)
        if missing:
            frozen = frozen_for_handler(scripted)
            if not missing_in_oldest_torch(frozen):
                logger.info(
                    "saving the wrapped .pt frozen: that drops the branches calling %s, which torch %s lacks",
                    ", ".join(missing),
                    OLDEST_TORCH,
                )
                scripted = frozen
    with staged_file(output) as tmp:
        with torchscript_deprecation_acknowledged():
            scripted.save(str(tmp))
        verify_standalone(tmp, module, class_names)


def verify_standalone(path: Path, module: torch.jit.ScriptModule, class_names: Sequence[str]) -> None:
    """Reload `path` (and freeze it, as the handler does) in `python -I` and compare its answers on random
    images of several sizes, batched together, with `module`'s forward on each; raise ExportError."""
    images = random_images()
    with tempfile.TemporaryDirectory(prefix="mar_builder-check-") as tmp:
        inputs, answers = Path(tmp) / "images.pt", Path(tmp) / "answers.pt"
        torch.save(images, inputs)
        result = subprocess.run(
            [sys.executable, "-I", "-c", STANDALONE_CHECK, str(path), str(inputs), str(answers)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            raise ExportError(f"the wrapped .pt does not work on its own: {lines[-1] if lines else result.returncode}")
        got = torch.load(answers, weights_only=True)
    if got["class_names"] != list(class_names):
        raise ExportError("class_names changed in the wrapped .pt")
    with torch.no_grad():
        expected = torch.cat([module(to_tensor(image)) for image in images]).float()
    for name in ("loaded", "frozen"):
        try:
            torch.testing.assert_close(got[name].float(), expected, atol=ADAPTER_TOLERANCE, rtol=1e-4)
        except AssertionError as e:
            raise ExportError(f"the wrapped .pt ({name}) differs from the module's own forward: {e}") from e
    logger.info("the wrapped .pt reloads on its own and answers as the module's forward does")
