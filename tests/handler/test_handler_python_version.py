"""The handler ships inside the .mar and runs on whatever Python the TorchServe image has: 3.9 in
TorchServe's own images and in KServe's TorchServe runtime. Its modules must load there."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mar_builder.constants import REPO_ROOT

HANDLER_DIR = REPO_ROOT / "handler"
IMAGE_PYTHON = "3.9"

# Under Python 3.9, with the third-party packages replaced by stand-ins that accept any attribute:
# each module's top level runs (imports, class and function definitions, decorators, defaults), which
# is where a 3.10-only construct such as `int | None` in an evaluated annotation would fail.
LOAD_EVERY_MODULE = """
import importlib, sys, types
class Anything(types.ModuleType):
    __path__ = []
    def __getattr__(self, name):
        return Anything(name)
    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else Anything("called")
    def __or__(self, other):
        return self
    def __mro_entries__(self, bases):
        return (object,)
for name in ["torch", "torch.nn", "torch.nn.functional", "PIL", "numpy", "yaml", "ts", "ts.service", "ts.metrics",
             "ts.metrics.dimension", "ts.metrics.metric_type_enum"]:
    sys.modules[name] = Anything(name)
sys.path.insert(0, sys.argv[1])
for module in sys.argv[2:]:
    importlib.import_module(module)
print("loaded", len(sys.argv) - 2)
"""


def image_python() -> str | None:
    """A working python3.9: on the PATH, or installed by pyenv (whose shim may not be active)."""
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{IMAGE_PYTHON}.*/bin/python{IMAGE_PYTHON}"))
    for candidate in [shutil.which(f"python{IMAGE_PYTHON}"), *map(str, pyenv)]:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_every_handler_module_loads_on_python_3_9():
    python = image_python()
    if python is None:
        pytest.skip(f"python{IMAGE_PYTHON} is not installed (pyenv install {IMAGE_PYTHON}); TorchServe's images run it")
    modules = sorted(p.stem for p in HANDLER_DIR.glob("*.py"))
    out = subprocess.run(
        [python, "-I", "-B", "-c", LOAD_EVERY_MODULE, str(HANDLER_DIR), *modules], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"loaded {len(modules)}"


def test_the_handler_uses_nothing_newer_than_python_3_9():
    # vermin reads the code for library features (zip(strict=...), str.removeprefix, ...) and syntax;
    # annotations are left to the test above, since `from __future__ import annotations` defers them.
    vermin = Path(sys.executable).parent / "vermin"
    out = subprocess.run(
        [str(vermin), f"--target={IMAGE_PYTHON}-", "--violations", "--no-tips", str(HANDLER_DIR)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Target versions not met" not in out.stdout
