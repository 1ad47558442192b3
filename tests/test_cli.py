"""The command line in-process: your own model in every form, to a verified .pt or a .mar."""

import json
import logging
import os
import subprocess
import sys
import zipfile

import pytest
import torch
import torchvision
from conftest import TinyCNN, class_names
from user_model_files import ARCH, NAMES, custom_network, run, write_user_files

from mar_builder import cli
from mar_builder.model import export
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe

SMALL = ["--resize", "72", "--crop", "64"]  # keeps the torchvision network fast


@pytest.fixture
def files(tmp_path):
    return write_user_files(tmp_path)


def images():
    generator = torch.Generator().manual_seed(5)
    return [
        torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=generator) for h, w in [(90, 120), (64, 64)]
    ]


def test_arch_weights_and_classes_export_the_eager_model(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    out = files / "out" / "landmarks.pt"
    flags = ["--arch", ARCH, "--weights", files / "arch.ckpt", "--classes", files / "classes.txt", *SMALL]
    code, err = run(["export", "--output", out, *flags, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"], capsys)
    assert code == 0, err
    reloaded = torch.jit.load(str(out))
    assert list(reloaded.class_names) == NAMES and (reloaded.resize, reloaded.crop) == ([72], [64, 64])
    assert list(reloaded.mean) == [0.5] * 3 and list(reloaded.std) == [0.2] * 3
    torch.manual_seed(0)
    recipe = Recipe(resize=(72,), crop=(64, 64), mean=(0.5,) * 3, std=(0.2,) * 3)
    eager = Predictor(torchvision.models.get_model(ARCH, num_classes=4), NAMES, recipe)
    for image in images():
        torch.testing.assert_close(reloaded(image), eager(image))
    assert "inner network scripted" in caplog.text
    assert "serving 4 classes, in output order: 0: Eiffel Tower, 1: Big Ben, 2: Taj Mahal, 3: Colosseum" in caplog.text


CLASS_FORMS = {
    "classes.txt": "Eiffel Tower\nBig Ben\nTaj Mahal\n",
    "classes.json": json.dumps(["Eiffel Tower", "Big Ben", "Taj Mahal"]),
    "index_to_name.json": json.dumps({"1": "Big Ben", "0": "Eiffel Tower", "2": "Taj Mahal"}),
    "train": None,  # --classes-from-dir: the folders' sorted names are Big Ben, Eiffel Tower, Taj Mahal
}


@pytest.mark.parametrize("form", sorted(CLASS_FORMS))
def test_every_classes_form_ends_up_in_the_pt(files, capsys, form):
    custom_network(files, "Scriptable", 3)
    if CLASS_FORMS[form] is None:
        for name in ["Taj Mahal", "Eiffel Tower", "Big Ben"]:
            (files / form / name).mkdir(parents=True)
        classes, expected = ["--classes-from-dir", files / form], ["Big Ben", "Eiffel Tower", "Taj Mahal"]
    else:
        (files / form).write_text(CLASS_FORMS[form])
        classes, expected = ["--classes", files / form], ["Eiffel Tower", "Big Ben", "Taj Mahal"]
    model = ["--model-file", f"{files}/networks.py:Scriptable", "--model-kwargs", '{"num_classes": 3}']
    code, err = run(
        ["export", "--output", files / "m.pt", *model, "--weights", files / "Scriptable.pt", *classes], capsys
    )
    assert code == 0, err
    assert list(torch.jit.load(str(files / "m.pt")).class_names) == expected


STANDALONE = """
import json, sys, torch
predictor = torch.jit.load(sys.argv[1])
generator = torch.Generator().manual_seed(5)
image = torch.randint(0, 256, (1, 3, 90, 120), dtype=torch.uint8, generator=generator)
print(json.dumps(predictor(image)[0].tolist()))
assert not [m for m in sys.modules if m.startswith(("mar_builder", "_user_model", "networks"))]
"""


def test_unscriptable_model_file_falls_back_to_tracing_and_the_pt_stands_alone(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    network = custom_network(files, "Unscriptable", 4)
    model = ["--model-file", f"{files}/networks.py:Unscriptable", "--model-kwargs", '{"num_classes": 4}']
    flags = [*model, "--weights", files / "Unscriptable.pt", "--classes", files / "classes.txt"]
    code, err = run(["export", "--output", files / "out.pt", *flags], capsys)
    assert code == 0, err
    assert "scripting the network failed" in caplog.text and "inner network traced" in caplog.text
    (files / "networks.py").unlink()  # the model file is needed at export time only
    script = files / "standalone.py"
    script.write_text(STANDALONE)
    out = subprocess.run(
        [sys.executable, "-I", str(script), str(files / "out.pt")],
        capture_output=True,
        text=True,
        cwd=files,
        env={"PATH": os.environ["PATH"]},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    eager = Predictor(network, NAMES, Recipe())
    torch.testing.assert_close(torch.tensor(json.loads(out.stdout)), eager(images()[0])[0])


def test_trace_flag_traces_a_scriptable_network(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    custom_network(files, "Scriptable", 4)
    model = ["--model-file", f"{files}/networks.py:Scriptable", "--model-kwargs", '{"num_classes": 4}']
    flags = [*model, "--weights", files / "Scriptable.pt", "--classes", files / "classes.txt", "--trace"]
    assert run(["export", "--output", files / "out.pt", *flags], capsys)[0] == 0
    assert "inner network traced" in caplog.text and "scripting the network failed" not in caplog.text


def test_build_packs_a_user_model_into_the_store(files, capsys):
    custom_network(files, "Scriptable", 4)
    model = ["--model-file", f"{files}/networks.py:Scriptable", "--model-kwargs", '{"num_classes": 4}']
    flags = [*model, "--weights", files / "Scriptable.pt", "--classes", files / "classes.txt"]
    code, err = run(["build", "--model-store", files / "store", "--name", "landmarks", "--topk", "2", *flags], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (files / "store").iterdir()) == ["landmarks.mar"]
    with zipfile.ZipFile(files / "store" / "landmarks.mar") as archive:
        archive.extract("landmarks.pt", files / "unpacked")
    assert list(torch.jit.load(str(files / "unpacked" / "landmarks.pt")).class_names) == NAMES


def test_pt_is_checked_then_packed_as_is(tiny_pt, tmp_path, capsys):
    code, err = run(["build", "--model-store", tmp_path / "store", "--name", "tiny", "--pt", tiny_pt], capsys)
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "store" / "tiny.mar") as archive:
        assert archive.read("tiny.pt") == tiny_pt.read_bytes()
    assert run(["export", "--output", tmp_path / "copy.pt", "--pt", tiny_pt], capsys)[0] == 0
    assert (tmp_path / "copy.pt").read_bytes() == tiny_pt.read_bytes()


def test_whole_pickled_model_with_allow_pickle(tmp_path, capsys, caplog):
    torch.manual_seed(0)
    network = TinyCNN(3)
    torch.save(network, tmp_path / "whole.pth")
    (tmp_path / "classes.json").write_text(json.dumps(class_names(3)))
    flags = ["--weights", tmp_path / "whole.pth", "--allow-pickle", "--classes", tmp_path / "classes.json"]
    code, err = run(["export", "--output", tmp_path / "m.pt", *flags], capsys)
    assert code == 0, err
    assert "runs any code the file holds" in caplog.text  # a warning: shown without --verbose
    image = images()[0]
    expected = Predictor(network, class_names(3), Recipe())(image)
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(image), expected)


def test_the_default_model_is_still_exported_traced(monkeypatch, tiny_predictor, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(cli, "build_predictor", lambda: tiny_predictor())
    monkeypatch.setattr(export, "export_predictor", lambda predictor, output, trace: calls.append(trace) or "traced")
    assert run(["export", "--output", tmp_path / "m.pt"], capsys)[0] == 0
    assert calls == [True]


def test_build_says_each_step_and_names_no_temporary_file(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    custom_network(files, "Scriptable", 4)
    model = ["--model-file", f"{files}/networks.py:Scriptable", "--model-kwargs", '{"num_classes": 4}']
    flags = [*model, "--weights", files / "Scriptable.pt", "--classes", files / "classes.txt"]
    assert run(["build", "--name", "steps", "--model-store", files / "store", *flags], capsys)[0] == 0
    steps = ["scripting the Predictor", "verifying the reloaded file", "packing steps.mar", "wrote "]
    positions = [caplog.text.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), caplog.text
    named = [word for word in caplog.text.split() if word.endswith(".pt") or ".pt " in word]
    assert named == [], caplog.text  # the .pt that build exports is temporary: the log does not name it
    assert "exported the Predictor (inner network scripted)" in caplog.text
