"""Where your network comes from: a torchvision architecture by name, your own model file, or an exported .pt."""

import difflib
import hashlib
import importlib.util
import json
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Tuple, Type

import torch
from torch import nn

from ..errors import ModelSourceError, first_line
from .class_names import validate_class_names
from .export import random_images, torchscript_deprecation_acknowledged
from .scripted_classifier import PROBABILITY_TOLERANCE, check_scripted_classifier

# What the handler uses of an exported Predictor; a .pt without them cannot be served.
PREDICTOR_ATTRIBUTES = ("class_names", "preprocess", "classify", "resize_size")


def classification_architectures() -> List[str]:
    """Every torchvision image classification architecture (not detection, segmentation, video...)."""
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


# What torchvision's builders change when given weights, beyond loading them (torchvision/models/googlenet.py,
# inception.py): the input transform its ImageNet weights were trained with, and the auxiliary heads dropped after
# loading (a network fine-tuned from those weights with a new fc has no aux keys).
AS_WITH_WEIGHTS = {
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": False},
    "inception_v3": {"transform_input": True, "aux_logits": False, "init_weights": False},
}
# The state_dict prefixes of those auxiliary heads: a checkpoint trained with them keeps them; serving drops them.
AUX_HEAD_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


def build_architecture(name: str, num_classes: int, as_with_weights: bool = False) -> nn.Module:
    """torchvision's `name`, randomly initialized with `num_classes` outputs. `as_with_weights`: constructed as
    get_model(name, weights=DEFAULT) constructs it (googlenet, inception_v3: transform_input=True, no auxiliary
    heads), the way a network fine-tuned from torchvision's weights was; otherwise as weights=None does."""
    import torchvision.models

    known = classification_architectures()
    if name not in known:
        if name in torchvision.models.list_models():
            raise ModelSourceError(
                f"--arch {name!r} is a torchvision model but not an image classifier "
                "(it is a detection, segmentation, video, optical-flow or quantized model)"
            )
        close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else "see torchvision.models.list_models(module=torchvision.models)"
        )
        raise ModelSourceError(f"--arch {name!r} is not a torchvision classification architecture; {hint}")
    kwargs = dict(AS_WITH_WEIGHTS.get(name, {})) if as_with_weights else {}
    if as_with_weights and name.startswith("vit_"):
        # torchvision's ViT builders take image_size from the weights (vit_h_14's DEFAULT: 518 pixels).
        kwargs["image_size"] = int(torchvision.models.get_model_weights(name).DEFAULT.meta["min_size"][0])
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except Exception as e:
        raise ModelSourceError(f"--arch: building {name}(num_classes={num_classes}) failed: {first_line(e)}") from e


def parse_model_kwargs(text: str | None) -> Dict[str, Any]:
    """--model-kwargs: a JSON object of keyword arguments ({} when not given)."""
    if text is None:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelSourceError(f"--model-kwargs {text!r} is not valid JSON: {e}") from e
    if not isinstance(kwargs, dict):
        raise ModelSourceError(
            f"--model-kwargs must be a JSON object such as '{{\"num_classes\": 5}}', got a JSON {type(kwargs).__name__}"
        )
    return kwargs


def build_from_model_file(spec: str, kwargs: Dict[str, Any]) -> nn.Module:
    """`path/to/net.py:Name(**kwargs)`: Name is an nn.Module class, or a function that returns one.

    The file is imported as a module of its own (its `if __name__ == "__main__":` block does not
    run) with its folder on sys.path, so it may import its neighbours. Only the export needs it:
    the exported .pt holds the network's code.
    """
    path, module, name = import_spec(spec, "--model-file", "ClassName", ModelSourceError)
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        defined = sorted(
            key
            for key, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module.__name__
        )
        found = f"; the nn.Module classes it defines: {', '.join(defined)}" if defined else ""
        what = "defines no" if factory is None else "has no callable"
        raise ModelSourceError(f"--model-file: {path} {what} {name!r}{found}")
    try:
        network = factory(**kwargs)
    except Exception as e:
        raise ModelSourceError(
            f"--model-file: {name}(**{json.dumps(kwargs)}) failed: {type(e).__name__}: {first_line(e)}"
        ) from e
    if not isinstance(network, nn.Module):
        raise ModelSourceError(f"--model-file: {name}(...) returned a {type(network).__name__}, not an nn.Module")
    return network


def load_pt(path: Path) -> torch.jit.ScriptModule:
    """`path` loaded with torch.jit.load onto the CPU (a .pt saved on a GPU included); ModelSourceError if it is not
    TorchScript (a checkpoint gets a hint towards --weights)."""
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"--pt: {path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        with torchscript_deprecation_acknowledged():
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        hint = "; it is a checkpoint: pass it as --weights, with --arch or --model-file" if _is_checkpoint(path) else ""
        raise ModelSourceError(f"--pt: {path} is not a TorchScript file ({first_line(e)}){hint}") from e


def is_exported_predictor(module: torch.jit.ScriptModule) -> bool:
    """Whether `module` has any of what this tool's Predictor adds (preprocess, classify, resize_size);
    a module with none of them is someone else's classifier, served through its own forward."""
    return any(hasattr(module, attribute) for attribute in PREDICTOR_ATTRIBUTES if attribute != "class_names")


def check_exported_pt(path: Path, module: torch.jit.ScriptModule | None = None) -> List[str]:
    """Check that `path` is a working classifier and return its class names.

    A Predictor exported by this tool must carry what the handler uses (class_names, preprocess,
    classify, resize_size) and turn random images of several sizes into one probability per class
    name, the same through `forward` as through `preprocess` + `classify`. Any other TorchScript
    module is checked by scripted_classifier.check_scripted_classifier.
    """
    path = Path(path)
    module = load_pt(path) if module is None else module
    if not is_exported_predictor(module):
        return check_scripted_classifier(module, path)
    missing = [attribute for attribute in PREDICTOR_ATTRIBUTES if not hasattr(module, attribute)]
    if missing:
        raise ModelSourceError(
            f"--pt: {path} is not a complete Predictor exported by this tool (it has no {', '.join(missing)}); "
            "re-export it with `python -m mar_builder export` and --arch or --model-file"
        )
    class_names = validate_class_names(list(module.class_names), f"{path}'s class_names")
    for image in random_images():
        h, w = image.shape[1:]
        try:
            with torch.no_grad():
                probabilities = module(image.unsqueeze(0))
                batched = module.classify(module.preprocess(image).unsqueeze(0))
        except Exception as e:
            raise ModelSourceError(f"--pt: {path} fails on a {h}x{w} image: {first_line(e)}") from e
        if tuple(probabilities.shape) != (1, len(class_names)):
            raise ModelSourceError(
                f"--pt: {path} answers shape {list(probabilities.shape)} for one image, "
                f"but has {len(class_names)} class names"
            )
        total = float(probabilities.sum())
        if bool((probabilities < 0).any()) or bool((probabilities > 1).any()):
            raise ModelSourceError(f"--pt: {path} does not answer probabilities (some are outside [0, 1])")
        # A sigmoid head (multi-label) gives each class its own probability: only a softmax's sum to 1.
        if getattr(module, "head", "softmax") == "softmax" and not abs(total - 1.0) <= PROBABILITY_TOLERANCE:
            raise ModelSourceError(f"--pt: {path} does not answer probabilities (they sum to {total:.4g})")
        if not torch.allclose(batched, probabilities, atol=1e-5, rtol=1e-4):
            raise ModelSourceError(f"--pt: {path}'s preprocess + classify differs from its forward on a {h}x{w} image")
    return class_names


def import_spec(spec: str, flag: str, expected: str, error: Type[Exception]) -> Tuple[Path, ModuleType, str]:
    """`path/to/file.py:NAME` given to `flag`: the file's path, the file imported (import_file) and NAME.
    Raises `error` for text that is not of that form or a file that is not there (`expected` names NAME's kind
    in the message), ModelSourceError for an import that fails."""
    path_text, colon, name = spec.rpartition(":")
    if not colon or not path_text or not name.isidentifier():
        raise error(f"{flag} {spec!r}: expected path/to/file.py:{expected}")
    path = Path(path_text)
    if not path.is_file():
        raise error(f"{flag}: {path}: {'not a file' if path.exists() else 'no such file'}")
    return path, import_file(path, flag), name


def import_file(path: Path, flag: str) -> ModuleType:
    """`path` imported as a module of its own (not as __main__), its folder on sys.path while it runs;
    ModelSourceError naming `flag` when it fails."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", resolved.stem)
    module_name = f"_user_model_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ModelSourceError(f"{flag}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickling and TorchScript look classes up here
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(module_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ModelSourceError(f"{flag}: importing {path} failed: {type(e).__name__}: {first_line(e)}") from e
    finally:
        sys.path.remove(str(resolved.parent))
    return module


def _is_checkpoint(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/data.pkl") for name in archive.namelist())
