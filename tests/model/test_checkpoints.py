import argparse
import logging
import pathlib
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from torch import nn

from mar_builder.errors import CheckpointError
from mar_builder.model.checkpoints import find_weights, load_checkpoint, load_weights, match_network_keys


def trained(num_classes: int = 5, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return TinyCNN(num_classes)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    a_state, b_state = a.state_dict(), b.state_dict()
    assert a_state.keys() == b_state.keys()
    for key in a_state:
        torch.testing.assert_close(a_state[key], b_state[key], rtol=0, atol=0, msg=key)


def load_into_fresh(path, **kwargs) -> nn.Module:
    network = trained(seed=2)  # different random weights, so a load that does nothing fails
    load_weights(network, find_weights(load_checkpoint(path, **kwargs), path), path, num_classes=5)
    return network


class LitClassifier(nn.Module):
    """Like a LightningModule: the network under self.model, a loss with a weight buffer beside it."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.model = network
        self.criterion = nn.CrossEntropyLoss(weight=torch.ones(5))


def optimizer_state(network: nn.Module):
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    network(torch.rand(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


CHECKPOINT_FORMS = {
    "plain state_dict": lambda net: net.state_dict(),
    "state_dict key": lambda net: {"state_dict": net.state_dict(), "epoch": 7, "optimizer": optimizer_state(net)},
    "model key": lambda net: {"model": net.state_dict(), "epoch": 3, "best_acc1": torch.tensor(0.91)},
    "model_state_dict key": lambda net: {
        "epoch": 12,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": optimizer_state(net),
        "loss": 0.25,
    },
    "DataParallel module. prefix": lambda net: nn.DataParallel(net).state_dict(),
    "torch.compile _orig_mod. prefix": lambda net: torch.compile(net).state_dict(),
    "DataParallel over torch.compile": lambda net: {"state_dict": nn.DataParallel(torch.compile(net)).state_dict()},
    "Lightning checkpoint": lambda net: {
        "epoch": 4,
        "global_step": 400,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": LitClassifier(net).state_dict(),
        "optimizer_states": [optimizer_state(net)],
        "lr_schedulers": [],
        "hyper_parameters": {"lr": 0.1, "num_classes": 5},
    },
    "Lightning over torch.compile": lambda net: {"state_dict": LitClassifier(torch.compile(net)).state_dict()},
}


@pytest.mark.parametrize("form", sorted(CHECKPOINT_FORMS))
def test_every_checkpoint_form_loads_the_same_weights(tmp_path, form):
    network = trained()
    path = tmp_path / "checkpoint.pth"
    torch.save(CHECKPOINT_FORMS[form](network), path)
    assert_same_weights(load_into_fresh(path), network)


def test_lightning_entries_outside_the_network_are_ignored_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    network = trained()
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": LitClassifier(network).state_dict(), "epoch": 1}, path)
    assert_same_weights(load_into_fresh(path), network)
    assert "using the checkpoint's entries under 'model.', ignoring criterion.weight" in caplog.text


def test_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    network = trained()
    path = tmp_path / "gpu.pt"
    with monkeypatch.context() as patch:
        # What torch.save records for tensors that live on the first GPU.
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"model_state_dict": network.state_dict(), "epoch": 3}, path)
    with zipfile.ZipFile(path) as archive:
        assert b"cuda:0" in archive.read("gpu/data.pkl")
    if not torch.cuda.is_available():  # without map_location, this very file cannot be loaded here
        with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
            torch.load(path, weights_only=True)
    loaded = load_into_fresh(path)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert_same_weights(loaded, network)


def test_old_batchnorm_checkpoints_without_num_batches_tracked_load(tmp_path):
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    network[1].running_mean.fill_(0.5)
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    load_weights(fresh, find_weights(load_checkpoint(tmp_path / "old.pt"), tmp_path / "old.pt"), tmp_path / "old.pt")
    torch.testing.assert_close(fresh[1].running_mean, torch.full((4,), 0.5))


def test_stripping_prefixes_keeps_the_per_module_metadata():
    network = trained()
    wrapped = nn.DataParallel(torch.compile(network)).state_dict()
    matched = match_network_keys(wrapped, set(network.state_dict()))
    assert list(matched) == list(network.state_dict())
    assert set(matched._metadata) == set(network.state_dict()._metadata)


def test_a_network_that_really_has_a_module_attribute_keeps_its_keys():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

    state = Holder().state_dict()
    assert list(match_network_keys(state, set(state))) == ["module.weight", "module.bias"]


def test_whole_pickled_model_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(trained(), path)
    with pytest.raises(CheckpointError, match=r"pickles Python objects \(conftest\.TinyCNN.*\).*runs arbitrary code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"Save model\.state_dict\(\) instead, or pass --allow-pickle"):
        load_checkpoint(path)


def test_whole_pickled_model_loads_with_allow_pickle(tmp_path, caplog):
    network = trained()
    path = tmp_path / "whole.pt"
    torch.save({"model": network, "epoch": 2}, path)
    loaded = find_weights(load_checkpoint(path, allow_pickle=True), path)
    assert isinstance(loaded, TinyCNN)
    assert_same_weights(loaded, network)
    assert "runs any code the file holds" in caplog.text


@pytest.mark.parametrize(
    "extra, name",
    [({"log_dir": pathlib.PurePosixPath("runs/1")}, "pathlib.PurePosixPath"), ({"acc": np.float64(0.9)}, "numpy")],
)
def test_trainer_checkpoints_with_python_objects_are_refused_naming_them(tmp_path, extra, name):
    path = tmp_path / "trainer.pth"
    torch.save({"state_dict": trained().state_dict(), **extra}, path)
    with pytest.raises(CheckpointError, match=rf"pickles Python objects \({name}"):
        load_checkpoint(path)
    assert_same_weights(load_into_fresh(path, allow_pickle=True), trained())


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match=r"weights: .*missing.pt: no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"weights: .*: not a file"):
        load_checkpoint(tmp_path)  # a directory
    for name, data in [("notes.pt", b"hello world"), ("empty.pt", b""), ("photo.pt", b"\x89PNG\r\n\x1a\n....")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{name} is not a torch checkpoint \(torch.load: \w+"):
            load_checkpoint(tmp_path / name)


def test_a_torchscript_file_is_pointed_to_pt(tmp_path, tiny_pt):
    with pytest.raises(CheckpointError, match=r"tiny.pt is a TorchScript file, not a checkpoint; .* use --pt"):
        load_checkpoint(tiny_pt)


@pytest.mark.parametrize(
    "checkpoint, message",
    [
        ([1, 2], r"holds a list, not a state_dict or a dict holding one"),
        ({}, r"holds an empty dict"),
        (
            {"epoch": 3, "optimizer": {"lr": 0.1}},
            r"holds no state_dict: its keys are 'epoch', 'optimizer'; expected a state_dict, "
            r"or a dict holding one under 'state_dict', 'model_state_dict', 'model'",
        ),
    ],
)
def test_checkpoints_without_weights(tmp_path, checkpoint, message):
    torch.save(checkpoint, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=message):
        find_weights(load_checkpoint(tmp_path / "c.pt"), tmp_path / "c.pt")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = trained().state_dict()
    state["extra.weight"] = torch.zeros(1)
    state["extra.bias"] = torch.zeros(1)
    del state["head.bias"]
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the network: 1 keys missing from the checkpoint \(head\.bias\) "
        r"and 2 unexpected keys \(extra\.weight, extra\.bias\)$",
    ):
        load_weights(trained(), state, tmp_path / "c.pt")


def test_a_checkpoint_of_another_network_says_so():
    other = nn.Sequential(*[nn.Linear(2, 2) for _ in range(5)]).state_dict()
    with pytest.raises(
        CheckpointError,
        match=r"4 keys missing .*\(features\.0\.weight, features\.0\.bias, head\.weight, \.\.\. 1 more\) "
        r"and 10 unexpected keys \(0\.weight, 0\.bias, 1\.weight, \.\.\. 7 more\); none of its keys match",
    ):
        load_weights(trained(), other, "c.pt")


def test_class_count_mismatch_gives_both_numbers():
    with pytest.raises(
        CheckpointError,
        match=r"c.pt has 10 classes \(head.weight is \[10, 8\] in the checkpoint\) but 5 class names were given",
    ):
        load_weights(trained(5), trained(10).state_dict(), "c.pt", num_classes=5)


def test_other_shape_mismatches_name_the_key_and_both_shapes():
    state = trained().state_dict()
    state["features.0.weight"] = torch.zeros(8, 3, 5, 5)
    with pytest.raises(
        CheckpointError,
        match=r"features\.0\.weight is \[8, 3, 5, 5\] in the checkpoint but \[8, 3, 3, 3\] in the network$",
    ):
        load_weights(trained(), state, "c.pt", num_classes=5)


def timm_checkpoint(path, network: nn.Module, ema: nn.Module) -> None:
    """What timm's train.py (CheckpointSaver) saves: weights, EMA weights, and its argparse.Namespace."""
    args = argparse.Namespace(model="resnet18", lr=0.05, mean=None, input_size=[3, 224, 224], model_ema=True)
    torch.save(
        {
            "epoch": 9,
            "arch": "resnet18",
            "state_dict": network.state_dict(),
            "optimizer": torch.optim.SGD(network.parameters(), lr=0.1).state_dict(),
            "version": 2,
            "args": args,
            "state_dict_ema": ema.state_dict(),
            "metric": 71.5,
        },
        path,
    )


def test_timm_training_checkpoints_load_without_allow_pickle_and_ema_is_chosen_by_flag(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    network, ema = trained(), TinyCNN(5)
    path = tmp_path / "model_best.pth.tar"
    timm_checkpoint(path, network, ema)
    assert_same_weights(load_into_fresh(path), network)
    assert "also holds EMA weights under 'state_dict_ema'; --ema uses them instead" in caplog.text
    fresh = TinyCNN(5)
    load_weights(fresh, find_weights(load_checkpoint(path), path, ema=True), path)
    assert_same_weights(fresh, ema)
    torch.save({"state_dict": network.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"--ema: .*plain.pth holds no EMA weights .*its keys: 'state_dict'"):
        find_weights(load_checkpoint(tmp_path / "plain.pth"), tmp_path / "plain.pth", ema=True)


def test_safetensors_weights_load_with_the_safetensors_package(tmp_path):
    from safetensors.torch import save_file

    network = trained()
    save_file(network.state_dict(), tmp_path / "model.safetensors")
    assert_same_weights(load_into_fresh(tmp_path / "model.safetensors"), network)
    (tmp_path / "model.safetensors").rename(tmp_path / "weights.bin")  # recognized by its layout too
    assert_same_weights(load_into_fresh(tmp_path / "weights.bin"), network)


def test_safetensors_without_the_package_names_it(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file(trained().state_dict(), tmp_path / "model.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(CheckpointError, match=r"model.safetensors is a .safetensors file; .* pip install safetensors"):
        load_checkpoint(tmp_path / "model.safetensors")
