"""The command line's errors: one line each, exit 1, nothing half-written in the model store."""

import json
import re

import pytest
import torch
import torchvision
from conftest import TinyCNN
from user_model_files import ARCH, custom_network, run, write_user_files

from mar_builder import cli
from mar_builder.model import export


@pytest.fixture
def files(tmp_path):
    return write_user_files(tmp_path)


def test_unexpected_errors_are_one_line_with_a_traceback_only_when_verbose(monkeypatch, tmp_path, capsys, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("tracer exploded\nwith details on many lines")

    monkeypatch.setattr(cli, "build_predictor", lambda: None)
    monkeypatch.setattr(export, "export_predictor", broken)
    code, err = run(["export", "--output", tmp_path / "m.pt"], capsys)
    assert code == 1
    assert err == "error: RuntimeError: tracer exploded (--verbose shows the traceback)\n"
    assert "Traceback" not in caplog.text
    code, err = run(["export", "--output", tmp_path / "m.pt", "--verbose"], capsys)
    assert code == 1 and err == "error: RuntimeError: tracer exploded\n"
    assert "Traceback (most recent call last)" in caplog.text  # logged to stderr by the CLI's logging setup


def error_case_files(files):
    """Everything the error cases below point at, written once per test."""
    custom_network(files, "Scriptable", 5)
    torch.save(torchvision.models.get_model(ARCH, num_classes=3).state_dict(), files / "arch3.pt")
    torch.save(TinyCNN(4), files / "whole.pt")
    (files / "notes.pt").write_text("hello, not a checkpoint")
    (files / "empty.txt").write_text("")
    (files / "dupes.json").write_text(json.dumps(["cat", "dog", "cat"]))
    torch.jit.script(TinyCNN(4)).save(str(files / "plain_script.pt"))


ARCH_FLAGS = ["--arch", ARCH, "--weights", "{d}/arch.ckpt", "--classes", "{d}/classes.txt"]
FILE_FLAGS = ["--model-file", "{d}/networks.py:Scriptable", "--model-kwargs", '{{"num_classes": 5}}']
ERRORS = {
    "missing weights": (
        ["--arch", ARCH, "--weights", "{d}/missing.pt", "--classes", "{d}/classes.txt"],
        r"weights: .*missing\.pt: no such file",
    ),
    "not a checkpoint": (
        ["--arch", ARCH, "--weights", "{d}/notes.pt", "--classes", "{d}/classes.txt"],
        r"weights: .*notes\.pt is not a torch checkpoint \(torch\.load: ",
    ),
    "unknown arch": (
        ["--arch", "squeezenet1_2", "--weights", "{d}/arch.ckpt", "--classes", "{d}/classes.txt"],
        r"--arch 'squeezenet1_2' is not a torchvision classification architecture; did you mean squeezenet1_1",
    ),
    "missing and unexpected keys": (
        ["--arch", "resnet18", "--weights", "{d}/arch.ckpt", "--classes", "{d}/classes.txt"],
        r"does not fit the network: \d+ keys missing from the checkpoint \(conv1\.weight, .*\) "
        r"and \d+ unexpected keys \(features\.0\.weight, .*\); none of its keys match",
    ),
    "arch class count": (
        ["--arch", ARCH, "--weights", "{d}/arch3.pt", "--classes", "{d}/classes.txt"],
        r"arch3\.pt has 3 classes \(classifier\.1\.weight is \[3, 512, 1, 1\] in the checkpoint\) "
        r"but 4 class names were given",
    ),
    "model file class count": (
        [*FILE_FLAGS, "--weights", "{d}/Scriptable.pt", "--classes", "{d}/classes.txt"],
        r"^the model outputs 5 classes but 4 class names were given$",
    ),
    "mean length": ([*ARCH_FLAGS, "--mean", "0.5,0.5"], r"--mean needs 3 values \(R,G,B\), got 2"),
    "std not positive": ([*ARCH_FLAGS, "--std", "0.2,0,0.2"], r"--std values must be positive, got 0\.2,0,0\.2"),
    "crop beyond resize": ([*ARCH_FLAGS, "--resize", "64", "--crop", "72"], r"--crop 72 is larger than --resize 64"),
    "empty classes": (
        ["--arch", ARCH, "--weights", "{d}/arch.ckpt", "--classes", "{d}/empty.txt"],
        r"class names: .*empty\.txt holds no class names",
    ),
    "duplicated classes": (
        ["--arch", ARCH, "--weights", "{d}/arch.ckpt", "--classes", "{d}/dupes.json"],
        r"duplicated class names: 'cat' \(classes 0 and 2\)",
    ),
    "pickled model": (
        ["--arch", ARCH, "--weights", "{d}/whole.pt", "--classes", "{d}/classes.txt"],
        r"whole\.pt pickles Python objects \(conftest\.TinyCNN, .*runs arbitrary code .* pass --allow-pickle",
    ),
    "pt that is no predictor": (
        ["--pt", "{d}/plain_script.pt"],
        r"plain_script\.pt has no class_names: give the scripted module a `class_names` attribute",
    ),
    "pt with classes": (["--pt", "{d}/plain_script.pt", "--classes", "{d}/classes.txt"], r"returns logits, not probab"),
    "no weights": (["--arch", ARCH, "--classes", "{d}/classes.txt"], r"--arch needs --weights CKPT"),
    "bad kwargs": (
        ["--model-file", "{d}/networks.py:Scriptable", "--model-kwargs", "{{num_classes: 4}}", *ARCH_FLAGS[2:]],
        r"--model-kwargs '\{num_classes: 4\}' is not valid JSON",
    ),
    "bad name": ([*ARCH_FLAGS, "--name", "my model"], r"--name 'my model': use letters, digits"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_line_and_leave_the_model_store_as_it_was(files, capsys, caplog, case):
    error_case_files(files)
    store = files / "store"
    store.mkdir()
    (store / "landmarks.mar").write_bytes(b"the archive from yesterday")
    (store / "other.mar").write_bytes(b"another model")
    flags, message = ERRORS[case]
    name = [] if "--name" in flags else ["--name", "landmarks"]
    code, err = run(["build", "--model-store", store, *name, *(f.format(d=files) for f in flags)], capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err + caplog.text
    assert re.search(message, err.removeprefix("error: ").rstrip("\n")), err
    assert sorted(p.name for p in store.iterdir()) == ["landmarks.mar", "other.mar"]
    assert (store / "landmarks.mar").read_bytes() == b"the archive from yesterday"


def test_a_failed_export_leaves_the_previous_pt(files, capsys):
    (files / "out.pt").write_bytes(b"yesterday's export")
    flags = ["--arch", ARCH, "--weights", files / "missing.pt", "--classes", files / "classes.txt"]
    assert run(["export", "--output", files / "out.pt", *flags], capsys)[0] == 1
    assert (files / "out.pt").read_bytes() == b"yesterday's export"
    assert sorted(p.name for p in files.iterdir() if p.name.startswith(".")) == []
