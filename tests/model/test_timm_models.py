"""timm networks via --model-file: a CNN, a ViT, a mobile hybrid (pretrained=False), pretrained_cfg, checkpoints."""

import argparse
import logging

import pytest
import timm  # a test dependency (requirements-dev.txt), not a runtime one
import torch
from user_model_files import run

NETS_PY = """
import timm


def create(name, num_classes):
    return timm.create_model(name, pretrained=False, num_classes=num_classes)
"""
NAMES = ["daisy", "dandelion", "rose", "sunflower"]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "nets.py").write_text(NETS_PY)
    (tmp_path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return tmp_path


def save_train_py_checkpoint(files, name: str):
    """timm's train.py checkpoint: state_dict, state_dict_ema and its argparse.Namespace of arguments."""
    torch.manual_seed(0)
    network = timm.create_model(name, pretrained=False, num_classes=len(NAMES)).eval()
    ema = timm.create_model(name, pretrained=False, num_classes=len(NAMES)).eval()
    path = files / "model_best.pth.tar"
    args = argparse.Namespace(model=name, lr=0.05, model_ema=True, input_size=None)
    torch.save(
        {
            "epoch": 3,
            "arch": name,
            "state_dict": network.state_dict(),
            "version": 2,
            "args": args,
            "state_dict_ema": ema.state_dict(),
            "metric": 80.1,
        },
        path,
    )
    return path, network, ema


def export(files, capsys, name: str, *extra):
    weights, network, ema = save_train_py_checkpoint(files, name)
    model = ["--model-file", f"{files}/nets.py:create", "--model-kwargs", f'{{"name": "{name}", "num_classes": 4}}']
    code, err = run(
        [
            "export",
            "--output",
            files / "m.pt",
            *model,
            "--weights",
            weights,
            "--classes",
            files / "classes.txt",
            *extra,
        ],
        capsys,
    )
    assert code == 0, err
    return torch.jit.load(str(files / "m.pt")), network, ema


def test_cnn_from_a_train_py_checkpoint_with_its_ema_weights(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    exported, network, ema = export(files, capsys, "mobilenetv3_small_050", "--ema")
    assert "using its EMA weights, 'state_dict_ema' (--ema)" in caplog.text
    assert "inner network scripted" in caplog.text
    # timm's eval transform: crop 224, resize floor(224 / crop_pct 0.875) = 256, ImageNet's mean and std.
    assert (exported.resize, exported.crop) == ([256], [224, 224])
    assert exported.mean == pytest.approx([0.485, 0.456, 0.406])
    batch = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(exported.classify(batch), ema(batch).softmax(1), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(exported.classify(batch), network(batch).softmax(1), atol=1e-3)


def test_vit_gets_timms_mean_and_std_unless_a_flag_says_otherwise(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    exported, _, _ = export(files, capsys, "vit_tiny_patch16_224")
    assert list(exported.mean) == [0.5] * 3 and list(exported.std) == [0.5] * 3
    assert (exported.resize, exported.crop) == ([248], [224, 224])  # floor(224 / 0.9)
    assert exported.interpolation == "bicubic"  # timm's pretrained_cfg in full
    assert "mean: timm pretrained_cfg, std: timm pretrained_cfg" in caplog.text
    exported, _, _ = export(files, capsys, "vit_tiny_patch16_224", "--std", "0.25,0.25,0.25", "--resize", "240")
    assert list(exported.std) == [0.25] * 3 and list(exported.mean) == [0.5] * 3
    assert (exported.resize, exported.crop) == ([240], [224, 224])
    assert "resize: flag, crop: timm pretrained_cfg, interpolation: timm pretrained_cfg" in caplog.text


def test_mobile_hybrid_whose_scripted_form_cannot_be_saved_is_traced_with_the_reason(files, capsys, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    exported, network, _ = export(files, capsys, "mobilevitv2_050")
    assert "scripting the network failed (saving the scripted module:" in caplog.text
    assert "inner network traced" in caplog.text
    assert (exported.resize, exported.crop) == ([288], [256, 256])  # floor(256 / 0.888)
    assert list(exported.mean) == [0.0] * 3 and list(exported.std) == [1.0] * 3
    batch = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(exported.classify(batch), network(batch).softmax(1), atol=1e-5, rtol=1e-4)
