"""hf_folder.py: what a save_pretrained folder must hold, read offline; class names, head; bad folders exit 1 and
write nothing."""

import json
import os
import re
import shutil
import socket

import pytest
from hf_folders import LABELS, VIT_PROCESSOR, save_hf_folder, write_processor_config

from mar_builder.cli import main
from mar_builder.model.hf_folder import build_hf_predictor, load_network


@pytest.fixture(scope="module")
def convnext_folder(tmp_path_factory):
    return save_hf_folder(tmp_path_factory.mktemp("hf") / "convnext", "convnext")


@pytest.fixture
def folder(convnext_folder, tmp_path):
    """A copy of the ConvNeXt folder that a test may break."""
    return shutil.copytree(convnext_folder, tmp_path / "folder")


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def export_fails(tmp_path, capsys, folder, *flags):
    """export --hf: exit 1, nothing written; returns the error line."""
    output = tmp_path / "out" / "model.pt"
    assert main(["export", "--hf", str(folder), "--output", str(output), *flags]) == 1
    assert not output.parent.exists() or not any(output.parent.iterdir())
    return capsys.readouterr().err


def test_class_names_are_id2label_in_index_order(tmp_path):
    names = [f"class {i}" for i in range(12)]
    folder = save_hf_folder(tmp_path / "twelve", "convnext", labels=names)
    # JSON object keys are strings, here in text order: "10" and "11" come before "2".
    edit_config(folder, id2label={str(i): names[i] for i in sorted(range(12), key=str)})
    assert list(json.loads((folder / "config.json").read_text())["id2label"])[:3] == ["0", "1", "10"]
    assert build_hf_predictor(folder).class_names == names


def test_multi_label_problem_type_gets_the_sigmoid_head(folder):
    assert build_hf_predictor(folder).head == "softmax"
    edit_config(folder, problem_type="single_label_classification")
    assert build_hf_predictor(folder).head == "softmax"
    edit_config(folder, problem_type="multi_label_classification")
    predictor = build_hf_predictor(folder)
    assert predictor.head == "sigmoid" and predictor.class_names == LABELS


def test_the_folder_loads_without_the_network(folder, monkeypatch):
    """Offline: any attempt to open a connection fails the load; the environment is restored after."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    build_hf_predictor(folder)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_the_network_returns_logits_from_pixel_values(folder):
    import torch

    network, config = load_network(folder)
    logits = network(torch.zeros(2, 3, 224, 224))
    assert logits.shape == (2, len(LABELS)) and config.model_type == "convnext"


def test_a_missing_folder_or_config_is_not_a_save_pretrained_folder(tmp_path, capsys, folder):
    assert "no such folder" in export_fails(tmp_path, capsys, tmp_path / "nowhere")
    (folder / "config.json").unlink()
    assert "is not a save_pretrained folder: it has no config.json" in export_fails(tmp_path, capsys, folder)


def test_a_text_model_is_not_an_image_classifier(tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    error = export_fails(tmp_path, capsys, tmp_path / "bert")
    assert "model_type 'bert' is not a transformers image classifier" in error


def test_a_bare_model_without_its_classification_head_is_refused(tmp_path, capsys, folder):
    edit_config(folder, architectures=["ConvNextModel"])
    assert "architectures is ConvNextModel, not an image classifier" in export_fails(tmp_path, capsys, folder)


def test_a_missing_preprocessor_config_is_refused(tmp_path, capsys, folder):
    (folder / "preprocessor_config.json").unlink()
    assert "has no preprocessor_config.json" in export_fails(tmp_path, capsys, folder)


def test_pickled_weights_are_not_loaded(tmp_path, capsys, folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    error = export_fails(tmp_path, capsys, folder)
    assert "has no model.safetensors; it has pytorch_model.bin, a pickle, which is not loaded" in error


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden_sizes": [8, 24]}, r"tensors of another shape classifier\.weight"),  # a wider second stage
        ({"depths": [1, 2]}, r"tensors missing convnext\.encoder\.stages\.1\.layers\.1"),
        ({"id2label": {str(i): f"c{i}" for i in range(6)}}, r"tensors of another shape classifier\.bias"),
    ],
)
def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, capsys, folder, changes, message):
    edit_config(folder, **changes)
    error = export_fails(tmp_path, capsys, folder)
    assert "model.safetensors does not fit config.json's ConvNextForImageClassification" in error
    assert re.search(message, error), error


def test_weights_of_another_architecture_are_refused(tmp_path, capsys, folder):
    vit = save_hf_folder(tmp_path / "vit", "vit")
    shutil.copy(vit / "model.safetensors", folder / "model.safetensors")
    assert "does not fit config.json's ConvNextForImageClassification: tensors missing" in export_fails(
        tmp_path, capsys, folder
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"problem_type": "regression"}, "problem_type 'regression' is a regressor"),
        ({"auto_map": {"AutoModelForImageClassification": "net.Net"}}, "names custom code"),
        ({"id2label": {"0": "a", "1": "b", "3": "d", "4": "e"}}, r"must number its classes 0..N-1"),
        ({"id2label": {"0": "a", "1": "a", "2": "b", "3": "c"}}, r"duplicate"),
    ],
)
def test_configs_that_cannot_be_served_are_refused(tmp_path, capsys, folder, changes, message):
    edit_config(folder, **changes)
    assert re.search(message, export_fails(tmp_path, capsys, folder), re.I)


def test_build_refuses_a_bad_folder_without_writing_an_archive(tmp_path, capsys, folder):
    write_processor_config(folder, {**VIT_PROCESSOR, "resample": 1})
    store = tmp_path / "store"
    assert main(["build", "--hf", str(folder), "--name", "bad", "--model-store", str(store)]) == 1
    assert "resample 1 (LANCZOS)" in capsys.readouterr().err
    assert not (store / "bad.mar").exists()


@pytest.mark.parametrize("flags", [["--classes", "labels.txt"], ["--mean", "0.5,0.5,0.5"], ["--head", "sigmoid"]])
def test_flags_the_folder_answers_are_refused(tmp_path, capsys, folder, flags):
    error = export_fails(tmp_path, capsys, folder, *flags)
    assert f"--hf reads the network, class names, head and preprocessing from the folder; drop {flags[0]}" in error


def test_validate_refuses_a_folder_that_is_not_the_archives_model(folder):
    from mar_builder.errors import ValidationError
    from mar_builder.model.recipe import Recipe
    from mar_builder.validation.hf_reference import hf_reference
    from mar_builder.validation.in_process import PtSettings

    with pytest.raises(ValidationError, match=r"its id2label \(4 classes, such as 'tabby cat'\) is not the archive's"):
        hf_reference(folder, PtSettings(("cat", "dog"), Recipe(), "softmax"))
    with pytest.raises(ValidationError, match=r"problem_type asks for the softmax head, the archive has sigmoid"):
        hf_reference(folder, PtSettings(tuple(LABELS), Recipe(), "sigmoid"))


def test_a_distilled_deit_answers_the_mean_of_its_two_heads(tmp_path):
    """facebook/deit-*-distilled-*: DeiTForImageClassificationWithTeacher, whose logits average its two heads."""
    import torch
    from hf_folders import DEIT_PROCESSOR
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    config = DeiTConfig(
        image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, id2label=dict(enumerate(LABELS)),
    )  # fmt: skip
    torch.manual_seed(0)
    model = DeiTForImageClassificationWithTeacher(config).eval()
    model.save_pretrained(tmp_path / "deit")
    write_processor_config(tmp_path / "deit", DEIT_PROCESSOR)
    predictor = build_hf_predictor(tmp_path / "deit")
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
        torch.testing.assert_close(predictor.model(pixel_values), output.logits)
        torch.testing.assert_close(output.logits, (output.cls_logits + output.distillation_logits) / 2)
