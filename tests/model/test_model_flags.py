import json
from pathlib import Path

import pytest

from mar_builder.cli import build_parser
from mar_builder.errors import ModelSourceError, SettingsError
from mar_builder.model.model_flags import user_model_from_args
from mar_builder.model.recipe import Recipe


def parse(*flags: str):
    return build_parser().parse_args(["build", *flags])


@pytest.fixture
def classes(tmp_path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\n")
    return path


def test_no_model_flags_mean_the_default_model():
    assert user_model_from_args(parse()) is None
    assert user_model_from_args(parse("--topk", "3", "--name", "x")) is None


def test_pt_alone_is_packed_as_is(tmp_path):
    assert user_model_from_args(parse("--pt", str(tmp_path / "m.pt"))) is None


def test_arch_flags_give_a_user_model(classes):
    args = parse(
        *("--arch", "resnet18", "--weights", "w.pt", "--classes", str(classes)),
        *("--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--resize", "160", "--crop", "128"),
    )
    model = user_model_from_args(args)
    assert model.arch == "resnet18" and model.weights == Path("w.pt") and model.class_names == ("cat", "dog")
    assert model.recipe == Recipe(resize=(160,), crop=(128, 128), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert model.given_preprocessing == ("mean", "std", "resize", "crop") and model.head is None
    assert model.model_file is None and model.model_kwargs is None and not model.allow_pickle


def test_model_file_flags_and_classes_from_dir(tmp_path):
    for name in ["tulip", "daisy"]:
        (tmp_path / "train" / name).mkdir(parents=True)
    args = parse(
        *("--model-file", "net.py:Net", "--model-kwargs", json.dumps({"num_classes": 2})),
        *("--weights", "w.pt", "--classes-from-dir", str(tmp_path / "train")),
    )
    model = user_model_from_args(args)
    assert model.model_file == "net.py:Net" and model.model_kwargs == {"num_classes": 2}
    assert model.class_names == ("daisy", "tulip")


def test_whole_pickled_model_needs_only_weights_and_allow_pickle(classes):
    model = user_model_from_args(parse("--weights", "whole.pt", "--allow-pickle", "--classes", str(classes)))
    assert model.arch is None and model.model_file is None and model.allow_pickle


@pytest.mark.parametrize(
    "flags, error, message",
    [
        (
            ["--pt", "m.pt", "--classes", "{classes}", "--trace"],
            SettingsError,
            r"--pt takes a TorchScript classifier as it is; drop --trace$",
        ),
        (["--pt", "m.pt", "--mean", "0.5,0.5,0.5"], SettingsError, r"as it is; drop --mean$"),
        (["--classes", "{classes}"], SettingsError, r"^--classes describe your own model: add --arch NAME or"),
        (["--mean", "0.5,0.5,0.5", "--crop", "200"], SettingsError, r"^--mean, --crop describe your own model"),
        (["--arch", "resnet18", "--weights", "w.pt"], SettingsError, r"needs its class names: --classes FILE or"),
        (["--arch", "resnet18", "--classes", "{classes}"], SettingsError, r"--arch needs --weights CKPT"),
        (["--weights", "w.pt", "--classes", "{classes}"], SettingsError, r"say which network: --arch NAME"),
        (
            ["--arch", "resnet18", "--weights", "w.pt", "--classes", "{classes}", "--model-kwargs", "{{}}"],
            SettingsError,
            r"--model-kwargs is for --model-file's class",
        ),
        (
            ["--model-file", "n.py:N", "--weights", "w.pt", "--classes", "{classes}", "--model-kwargs", "5"],
            ModelSourceError,
            r"--model-kwargs must be a JSON object",
        ),
    ],
)
def test_incomplete_or_conflicting_flags_are_refused(classes, flags, error, message):
    args = parse(*(flag.format(classes=classes) for flag in flags))
    with pytest.raises(error, match=message):
        user_model_from_args(args)


@pytest.mark.parametrize(
    "flags",
    [
        ["--arch", "resnet18", "--model-file", "n.py:N"],
        ["--arch", "resnet18", "--pt", "m.pt"],
        ["--classes", "c.txt", "--classes-from-dir", "train"],
        ["--resize", "big"],
    ],
)
def test_argparse_refuses_exclusive_or_malformed_flags(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(*flags)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_export_accepts_the_same_model_flags():
    args = build_parser().parse_args(["export", "--output", "x.pt", "--arch", "resnet18", "--trace"])
    assert args.arch == "resnet18" and args.trace and args.output == Path("x.pt")
