"""The oldest torch a .pt of this tool must load on (TorchServe 0.12.0's images: 2.4.0), and the check of a
saved file's operators against that torch's list.

A scripted module's saved code is compiled again when it is loaded, every branch of it: one call of an
operator that the loading torch does not register fails the whole load (`Unknown builtin op`), even in
a branch that never runs. A scripted F.interpolate of torch 2.14 is such a case: its lanczos branch calls
aten::_upsample_lanczos2d_aa, which torch 2.4.0 does not have.
"""

import logging
from functools import cache
from pathlib import Path
from typing import FrozenSet, Iterable, List, Set

import torch

logger = logging.getLogger(__name__)

# The torch of TorchServe's official 0.12.0 images (pytorch/serve v0.12.0, requirements/torch_linux.txt), the
# last TorchServe release: the deploy manifests name those images. requirements-image.txt holds their stack.
OLDEST_TORCH = "2.4.0"
# Every operator (name.overload) torch 2.4.0 registers with torchvision 0.19.0 imported, one a line:
# written by scripts/oldest_torch_operators.py in the image stack's venv (tests/model/test_oldest_torch.py
# checks that it still matches that venv's torch).
OPERATORS_FILE = Path(__file__).with_name(f"torch_{OLDEST_TORCH}_operators.txt")
# The handler's attributes: freezing keeps these and drops the rest.
HANDLER_ATTRIBUTES = ["preprocess", "classify", "class_names", "resize_size"]


def registered_operators() -> FrozenSet[str]:
    """This torch's operators as name.overload ("aten::add.Tensor"; "aten::size" without an overload name)."""
    return frozenset(_qualified(s.name, s.overload_name) for s in torch._C._jit_get_all_schemas())


@cache
def oldest_torch_operators() -> FrozenSet[str]:
    """The operators torch OLDEST_TORCH registers, from OPERATORS_FILE."""
    lines = OPERATORS_FILE.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def operators_of(module: torch.jit.ScriptModule) -> Set[str]:
    """Every operator (name.overload) that any method of `module` or of its submodules can call, with every
    branch and every function it calls inlined: what a torch compiles when it loads the saved file."""
    used: Set[str] = set()
    for submodule in module.modules():
        for name in submodule._c._method_names():
            _collect(submodule._c._get_method(name).inlined_graph.nodes(), used)
    return used


def missing_in_oldest_torch(module: torch.jit.ScriptModule) -> List[str]:
    """The operators of `module` that torch OLDEST_TORCH does not register, sorted; empty when it loads there."""
    return sorted(operators_of(module) - oldest_torch_operators())


def frozen_for_handler(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """`module` frozen as the handler freezes it: its attributes and submodules become constants, so that
    branches decided by them (F.interpolate's mode) are dropped with the operators they call."""
    return torch.jit.freeze(module.eval(), preserved_attrs=HANDLER_ATTRIBUTES)


def describe_missing(missing: Iterable[str]) -> str:
    names = sorted({name.split(".")[0] for name in missing})
    return (
        f"its TorchScript code calls {', '.join(names)}, which torch {OLDEST_TORCH} does not have: "
        f"TorchServe 0.12.0's official images (torch {OLDEST_TORCH}) cannot load it (their workers fail with "
        "'Unknown builtin op'); the stack of `mar-builder deploy`'s Dockerfile can"
    )


def _qualified(name: str, overload: str) -> str:
    return f"{name}.{overload}" if overload else name


def _collect(nodes: Iterable[torch._C.Node], used: Set[str]) -> None:
    for node in nodes:
        schema = node.schema()
        if schema != "(no schema)":  # prim::If, prim::Constant, ...: the interpreter's own, in every torch
            used.add(schema.split("(", 1)[0])
        for block in node.blocks():
            _collect(block.nodes(), used)


def check_loads_on_oldest_torch(path: Path, what: str, hint: str = "") -> List[str]:
    """Load the saved `path` and log whether torch OLDEST_TORCH can load it: a warning naming the missing
    operators (with `hint`, what to do about it), else one info line. Returns the missing operators."""
    from .export import torchscript_deprecation_acknowledged

    with torchscript_deprecation_acknowledged():
        module = torch.jit.load(str(path), map_location="cpu")
    missing = missing_in_oldest_torch(module)
    if missing:
        logger.warning("%s: %s%s", what, describe_missing(missing), f". {hint}" if hint else "")
    else:
        logger.info("%s calls only operators torch %s has: it loads on TorchServe 0.12.0's images", what, OLDEST_TORCH)
    return missing
