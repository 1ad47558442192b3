"""Helpers for the server command tests: a tiny archive, `python -m mar_builder` in a subprocess, copies of
the checkout."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

from user_model_files import NAMES, SMALL, custom_network, write_user_files

from mar_builder.cli import main as build_main
from mar_builder.server.local_server import REPO_ROOT

TINY = "tiny"
# What a checkout needs to serve archives: the code and TorchServe's settings files.
CHECKOUT_FILES = ("mar_builder", "config.properties", "log4j2.xml", "metrics.yaml")


def build_tiny_archive(directory: Path) -> Path:
    """A model store holding tiny.mar: a four-class network of a few hundred weights, quick to load."""
    files = write_user_files(directory)
    custom_network(files, "Scriptable", len(NAMES))
    store = directory / "store"
    model = ["--model-file", f"{files}/networks.py:Scriptable", "--model-kwargs", f'{{"num_classes": {len(NAMES)}}}']
    flags = [*model, "--weights", str(files / "Scriptable.pt"), "--classes", str(files / "classes.txt"), *SMALL]
    assert build_main(["build", "--name", TINY, "--model-store", str(store), *flags]) == 0
    return store


def mar_builder(
    args: Sequence[object], cwd: Path = REPO_ROOT, env: Dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m mar_builder ARGS` run from `cwd`, so that it is that checkout's code, its output captured
    (a server that kept the pipes open would make this time out)."""
    command = [sys.executable, "-m", "mar_builder", *[str(a) for a in args]]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def copy_checkout(destination: Path) -> Path:
    """A second checkout of this repository's serving side, as `git worktree add` would give."""
    destination.mkdir(parents=True)
    for name in CHECKOUT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, destination / name)
    return destination
