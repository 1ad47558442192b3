"""Checkpoints: load them safely on the CPU, find the state_dict inside, and fit it to the network."""

import argparse
import logging
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Set, Tuple

import torch
from torch import nn

from ..errors import CheckpointError, first_line

logger = logging.getLogger(__name__)

# Where training code keeps the weights inside a bigger dict (Lightning, trainer loops, timm...).
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
# Where training code keeps the exponential-moving-average weights (timm's train.py: state_dict_ema).
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict")
SAFE_GLOBALS = [argparse.Namespace]  # classes that weights_only loading may rebuild: data only
DATA_PARALLEL_PREFIX = "module."  # nn.DataParallel and DistributedDataParallel
COMPILED_COMPONENT = "_orig_mod"  # torch.compile's OptimizedModule, possibly nested inside another wrapper
SHOWN_KEYS = 3  # how many keys an error message names


def load_checkpoint(path: Path, allow_pickle: bool = False) -> Any:
    """What `path` holds, loaded with weights_only=True onto the CPU (GPU-saved files included).

    Files that pickle Python objects (a whole model from torch.save(model), numpy values, argparse
    namespaces) are refused, because unpickling them runs code from the file, unless `allow_pickle`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights: {path}: {'not a file' if path.exists() else 'no such file'}")
    if _is_torchscript(path):
        raise CheckpointError(
            f"weights: {path} is a TorchScript file, not a checkpoint; to pack a Predictor exported by this "
            "tool use --pt, otherwise save the network's state_dict() with torch.save"
        )
    if _is_safetensors(path):
        return load_safetensors(path)
    if allow_pickle:
        logger.warning("loading %s with full unpickling (--allow-pickle): this runs any code the file holds", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's notices about formats; errors still raise
            # timm's train.py saves its argparse.Namespace of arguments beside the weights: plain data,
            # rebuilt without running code from the file, so the safe loader may accept it.
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        unpickler_says = str(e).rpartition("WeightsUnpickler error:")[2]
        named = re.findall(r"GLOBAL ([\w.]+)", unpickler_says)
        if named and not allow_pickle:  # a class or function to import: the unpickler refused to run code
            raise CheckpointError(_pickle_refusal(path, named)) from e
        raise CheckpointError(
            f"weights: {path} is not a torch checkpoint (torch.load: {first_line(unpickler_says)})"
        ) from e
    except (AttributeError, ModuleNotFoundError) as e:
        if allow_pickle:  # the pickled model's class is not importable here
            raise CheckpointError(
                f"weights: unpickling {path} failed ({first_line(e)}): the pickled model's class must be "
                "importable; save model.state_dict() instead and pass --arch or --model-file"
            ) from e
        raise CheckpointError(f"weights: {path} is not a torch checkpoint (torch.load: {first_line(e)})") from e
    except Exception as e:  # torch.load raises KeyError, EOFError, RuntimeError... on foreign bytes
        raise CheckpointError(
            f"weights: {path} is not a torch checkpoint (torch.load: {type(e).__name__}: {first_line(e)})"
        ) from e


def load_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    """A .safetensors file's tensors onto the CPU, with the safetensors package (no pickle, nothing runs)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(
            f"weights: {path} is a .safetensors file; loading it needs the safetensors package: pip install safetensors"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"weights: {path} is not a valid .safetensors file: {first_line(e)}") from e


def find_weights(
    checkpoint: Any, path: Path, depth: int = 2, ema: bool = False
) -> Mapping[str, torch.Tensor] | nn.Module:
    """The state_dict in a loaded checkpoint: itself, or under 'state_dict', 'model_state_dict' or
    'model' (other entries such as the optimizer or the epoch are ignored); or a whole nn.Module.
    With `ema`, the EMA weights under 'state_dict_ema', 'model_ema' or 'ema_state_dict' instead."""
    ema_key = next((k for k in EMA_KEYS if isinstance(checkpoint, Mapping) and k in checkpoint), None)
    if ema:
        if ema_key is None or not isinstance(checkpoint[ema_key], (Mapping, nn.Module)):
            keys = ", ".join(repr(k) for k in list(checkpoint)[:8]) if isinstance(checkpoint, Mapping) else "none"
            raise CheckpointError(
                f"--ema: {path} holds no EMA weights under {', '.join(repr(k) for k in EMA_KEYS)} "
                f"(its keys: {keys}); drop --ema"
            )
        logger.info("%s: using its EMA weights, %r (--ema)", path, ema_key)
        return find_weights(checkpoint[ema_key], path, depth - 1)
    if ema_key is not None:
        logger.info("%s also holds EMA weights under %r; --ema uses them instead", path, ema_key)
    if isinstance(checkpoint, nn.Module) or _is_state_dict(checkpoint):
        return checkpoint
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"weights: {path} holds a {type(checkpoint).__name__}, not a state_dict or a dict holding one"
        )
    if not checkpoint:
        raise CheckpointError(f"weights: {path} holds an empty dict")
    for key in CONTAINER_KEYS:
        if key in checkpoint and depth > 0 and isinstance(checkpoint[key], (Mapping, nn.Module)):
            others = [str(k) for k in checkpoint if k != key]
            logger.info("%s: using its %r entry%s", path, key, f" (ignoring {', '.join(others[:6])})" if others else "")
            return find_weights(checkpoint[key], path, depth - 1)
    keys = ", ".join(repr(k) for k in list(checkpoint)[:8])
    raise CheckpointError(
        f"weights: {path} holds no state_dict: its keys are {keys}; expected a state_dict, or a dict "
        f"holding one under {', '.join(repr(k) for k in CONTAINER_KEYS)}"
    )


def load_weights(
    network: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, num_classes: int | None = None
) -> None:
    """Copy `state_dict` into `network`; every key must match, with the same shape, or CheckpointError.

    `num_classes` (the number of class names) turns a mismatched output layer into a message that
    gives both class counts.
    """
    expected = network.state_dict()
    fitted = match_network_keys(state_dict, set(expected))
    mismatched = [
        (key, list(value.shape), list(expected[key].shape))
        for key, value in fitted.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if mismatched:
        raise CheckpointError(_shape_message(path, mismatched, num_classes))
    try:
        result = network.load_state_dict(fitted, strict=False)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise CheckpointError(f"weights: {path} does not fit the network: {detail}") from e
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            _keys_message(path, result.missing_keys, result.unexpected_keys, set(fitted) & set(expected))
        )


def match_network_keys(state_dict: Mapping[str, torch.Tensor], expected: Set[str]) -> Dict[str, torch.Tensor]:
    """The checkpoint's entries renamed to fit the `expected` keys: without torch.compile's `_orig_mod.`,
    DataParallel's leading `module.`, and a training wrapper's prefix (a LightningModule's `model.`)
    when that makes every key fit. Anything else is returned as is, for load_weights to report."""
    renamed = _renamed(state_dict, lambda key: ".".join(p for p in key.split(".") if p != COMPILED_COMPONENT))
    renamed = _without_data_parallel(renamed, expected)
    if _fits(renamed, expected):
        return renamed
    fitting = []
    for prefix in sorted({key.split(".", 1)[0] + "." for key in renamed if "." in key}):
        inner = _renamed(renamed, lambda key, p=prefix: key[len(p) :] if key.startswith(p) else None)
        inner = _without_data_parallel(inner, expected)
        if _fits(inner, expected):
            fitting.append((prefix, inner))
    if len(fitting) != 1:
        return renamed
    prefix, inner = fitting[0]
    ignored = [key for key in renamed if not key.startswith(prefix)]
    logger.info("using the checkpoint's entries under %r%s", prefix, f", ignoring {_few(ignored)}" if ignored else "")
    return inner


def _is_safetensors(path: Path) -> bool:
    """By its suffix, or by its layout: an 8-byte little-endian header length, then a JSON header."""
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _pickle_refusal(path: Path, named: List[str]) -> str:
    found = list(named)  # the first one the unpickler met: for a whole model, the model's class
    try:  # and every other one the file needs
        found += sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - set(named))
    except Exception:  # the legacy (non-zip) format cannot be inspected
        pass
    what = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    return (
        f"weights: {path} pickles Python objects ({what}), as torch.save(model) does for a whole model; loading "
        "them runs arbitrary code from the file, so it is refused. Save model.state_dict() instead, or pass "
        "--allow-pickle if you trust the file"
    )


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _renamed(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str | None]) -> Dict[str, torch.Tensor]:
    """A copy with renamed keys (None drops one); the per-module `_metadata` that load_state_dict
    reads (layout versions) follows the rename."""
    out: Dict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        new = rename(key)
        if new is not None:
            out[new] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        renamed_metadata: Dict[str, Any] = OrderedDict()
        for module, info in metadata.items():  # module paths without a trailing dot; "" is the root
            new = rename(module + ".") if module else module
            if new is not None:
                renamed_metadata[new.removesuffix(".")] = info
        out._metadata = renamed_metadata  # type: ignore[attr-defined]
    return out


def _without_data_parallel(state_dict: Dict[str, torch.Tensor], expected: Set[str]) -> Dict[str, torch.Tensor]:
    def wrapped(keys: Sequence[str] | Set[str]) -> bool:
        return bool(keys) and all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys)

    while wrapped(list(state_dict)) and not wrapped(expected):
        state_dict = _renamed(state_dict, lambda key: key.removeprefix(DATA_PARALLEL_PREFIX))
    return state_dict


def _fits(state_dict: Mapping[str, torch.Tensor], expected: Set[str]) -> bool:
    keys = set(state_dict)
    # Old BatchNorm checkpoints lack num_batches_tracked; load_state_dict fills it in.
    return keys <= expected and all(k.endswith("num_batches_tracked") for k in expected - keys)


def _shape_message(path: Path, mismatched: List[Tuple[str, List[int], List[int]]], num_classes: int | None) -> str:
    key, got, want = mismatched[0]
    # Only the output layer differs, in its first dimension: the checkpoint has another number of classes.
    if num_classes is not None and len({g[0] if g else None for _, g, _ in mismatched}) == 1:
        if all(g and w and w[0] == num_classes != g[0] and g[1:] == w[1:] for _, g, w in mismatched):
            return (
                f"weights: {path} has {got[0]} classes ({key} is {got} in the checkpoint) "
                f"but {num_classes} class names were given"
            )
    more = f" (and {len(mismatched) - 1} more: {_few([m[0] for m in mismatched[1:]])})" if len(mismatched) > 1 else ""
    return f"weights: {path} does not fit the network: {key} is {got} in the checkpoint but {want} in the network{more}"


def _keys_message(path: Path, missing: List[str], unexpected: List[str], matched: Set[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys missing from the checkpoint ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    hint = "; none of its keys match: is it a checkpoint of another network?" if not matched else ""
    return f"weights: {path} does not fit the network: {' and '.join(parts)}{hint}"


def _few(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
