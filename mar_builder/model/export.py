"""Export command: build a Predictor, script it, verify the reloaded file, and only then write it."""

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, List, Sequence, Tuple

import torch
from torch import nn

from ..constants import DEFAULT_CROP_SIZE
from ..errors import ExportError, first_line
from .predictor import Predictor

logger = logging.getLogger(__name__)

# (height, width) of the random images that every export is checked on: portrait, landscape, tiny.
VERIFY_IMAGE_SIZES: Tuple[Tuple[int, int], ...] = ((300, 400), (480, 320), (224, 224), (31, 45))
VERIFY_SEED = 0


@contextlib.contextmanager
def torchscript_deprecation_acknowledged() -> Iterator[None]:
    """TorchScript is deprecated upstream but still supported in the pinned torch; it is our
    export format on purpose. Silence exactly that notice, and nothing else, while we use it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def trace_network(
    network: nn.Module, input_size: Sequence[int] = (3, DEFAULT_CROP_SIZE, DEFAULT_CROP_SIZE)
) -> torch.jit.ScriptModule:
    """Trace the inner network on one input of input_size (C, h, w) (for networks TorchScript cannot script)."""
    example = torch.rand(1, *input_size)
    with torchscript_deprecation_acknowledged(), torch.no_grad():
        return torch.jit.trace(network.eval(), example)


def script_predictor(predictor: Predictor) -> torch.jit.ScriptModule:
    with torchscript_deprecation_acknowledged():
        return torch.jit.script(predictor.cpu().eval())


def random_images(sizes: Sequence[Tuple[int, int]] = VERIFY_IMAGE_SIZES) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(VERIFY_SEED)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes]


def verify_exported(path: Path, eager: Predictor, atol: float = 1e-5) -> None:
    """Reload `path` as a fresh module and check it against the eager Predictor; raise ExportError."""
    try:
        with torchscript_deprecation_acknowledged():
            reloaded = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ExportError(f"the exported file does not reload: {e}") from e
    class_names = list(reloaded.class_names)
    if class_names != list(eager.class_names):
        raise ExportError("class_names changed in the exported file")
    images = random_images()
    with torch.no_grad():
        for image in images:
            expected = eager(image.unsqueeze(0))
            if expected.shape[1] != len(class_names):
                raise ExportError(
                    f"the model outputs {expected.shape[1]} classes but {len(class_names)} class names were given"
                )
            got_forward = reloaded(image.unsqueeze(0))
            got_batched = reloaded.classify(reloaded.preprocess(image).unsqueeze(0))
            for name, got in (("forward", got_forward), ("preprocess+classify", got_batched)):
                try:
                    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
                except AssertionError as e:
                    h, w = image.shape[1:]
                    raise ExportError(
                        f"exported {name} differs from the eager Predictor on a {h}x{w} image: {e}"
                    ) from e
        # One batch of several differently sized images, the way the handler calls it.
        batch = torch.stack([reloaded.preprocess(image) for image in images])
        expected = torch.cat([eager(image.unsqueeze(0)) for image in images])
        torch.testing.assert_close(reloaded.classify(batch), expected, atol=atol, rtol=1e-4)


@contextlib.contextmanager
def staged_file(output: Path) -> Iterator[Path]:
    """A temporary file beside `output` that replaces it when the block ends without an error; removed
    otherwise, so `output` is never left half written."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    # mkstemp makes the file 0600; the output gets what a plain open() would give it (0644 under umask 022),
    # so another account (TorchServe's model-server user in its images) can read the .pt and the .mar's copy.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def export_predictor(predictor: Predictor, output: Path, trace: bool = False) -> str:
    """Script `predictor`, save, reload and verify it; if any of that fails (or `trace` is asked for),
    do the same with its inner network traced instead, logging why.

    Returns "scripted" or "traced": how the inner network was exported. `output` is replaced
    atomically, and only after verification passes.
    """
    predictor = predictor.cpu().eval()
    if not trace:
        logger.info("scripting the Predictor with TorchScript")
        try:
            _write_verified(lambda: script_predictor(predictor), predictor, output)
            return "scripted"
        except Exception as e:  # TorchScript raises many types: unsupported Python, unsavable calls, mismatches
            logger.info("scripting the network failed (%s: %s); tracing it instead", _step_of(e), first_line(e))
    logger.info("tracing the inner network on a %s input, then scripting", "x".join(map(str, predictor.input_size)))
    try:
        _write_verified(lambda: script_predictor(_with_traced_network(predictor)), predictor, output)
    except _ExportStepError as e:
        raise e.error from e.error.__cause__
    return "traced"


class _ExportStepError(Exception):
    """Which of script, save or verify failed, around the original error."""

    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {first_line(error)}")
        self.step, self.error = step, error


def _step_of(error: Exception) -> str:
    return error.step if isinstance(error, _ExportStepError) else "export"


def _write_verified(make: Callable[[], torch.jit.ScriptModule], predictor: Predictor, output: Path) -> None:
    """make() -> save to a temporary file -> reload and verify -> replace `output`; the failing step is named."""
    try:
        scripted = make()
    except Exception as e:
        raise _ExportStepError("torch.jit.script", e) from e
    with staged_file(output) as tmp:
        try:
            with torchscript_deprecation_acknowledged():
                scripted.save(str(tmp))
        except Exception as e:
            raise _ExportStepError("saving the scripted module", e) from e
        logger.info("verifying the reloaded file against the eager Predictor on %d images", len(VERIFY_IMAGE_SIZES))
        try:
            verify_exported(tmp, predictor)
        except ExportError as e:
            raise _ExportStepError("verifying the reloaded file", e) from e


def _with_traced_network(predictor: Predictor) -> Predictor:
    """The same Predictor, its inner network replaced by a trace on an input of the recipe's output size."""
    return Predictor(
        trace_network(predictor.model, predictor.input_size), predictor.class_names, predictor.recipe, predictor.head
    )
