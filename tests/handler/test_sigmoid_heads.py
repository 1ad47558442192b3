"""Sigmoid heads through the handler (top-k {label: probability}, most likely first) and through classify.onnx."""

import pytest
import torch
from classifier_handler import ClassifierHandler
from conftest import TinyCNN, class_names
from fake_context import FakeContext
from image_decoding import decode_image
from image_variants import encode, sample
from torch import nn

from mar_builder.model.default_model import DEFAULT_RECIPE
from mar_builder.model.export import export_predictor
from mar_builder.model.onnx_export import export_onnx
from mar_builder.model.predictor import Predictor

CAT_JPEG = encode(sample("chelsea.png"), "JPEG")


class OneLogit(nn.Module):
    """A binary classifier trained with BCEWithLogitsLoss: one logit, positive for the positive class."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def export(tmp_path, network: nn.Module, names, head: str):
    torch.manual_seed(0)
    path = tmp_path / "model" / "m.pt"
    export_predictor(Predictor(network, names, DEFAULT_RECIPE, head), path)
    return path


def answer(path, topk: int = 5):
    context = FakeContext(path.parent, path.name, {"minWorkers": 1, "handler": {"topk": topk}})
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))[0]


def eager_logits(path, network: nn.Module) -> torch.Tensor:
    pt = torch.jit.load(str(path))
    with torch.no_grad():
        return network.eval()(pt.preprocess(decode_image(CAT_JPEG)).unsqueeze(0))[0]


def test_one_logit_with_one_class_name_answers_its_sigmoid(tmp_path):
    torch.manual_seed(0)
    network = OneLogit()
    path = export(tmp_path, network, ["defect"], "sigmoid")
    got = answer(path)
    assert list(got) == ["defect"]
    assert got["defect"] == pytest.approx(torch.sigmoid(eager_logits(path, network))[0].item(), abs=1e-5)
    assert got["defect"] != pytest.approx(1.0)  # a softmax over one value would always say 1.0


def test_one_logit_with_two_class_names_answers_both(tmp_path):
    torch.manual_seed(0)
    network = OneLogit()
    path = export(tmp_path, network, ["ok", "defect"], "sigmoid")
    got = answer(path)
    p = torch.sigmoid(eager_logits(path, network))[0].item()
    assert got == pytest.approx({"ok": 1 - p, "defect": p}, abs=1e-5)
    assert list(got.values()) == sorted(got.values(), reverse=True)


def test_multi_label_answers_each_class_its_own_probability_most_likely_first(tmp_path):
    torch.manual_seed(0)
    network = TinyCNN(6)
    path = export(tmp_path, network, class_names(6), "sigmoid")
    got = answer(path, topk=4)
    expected = torch.sigmoid(eager_logits(path, network))
    top = expected.topk(4)
    assert list(got) == [f"class_{i}" for i in top.indices.tolist()]
    assert list(got.values()) == pytest.approx(top.values.tolist(), abs=1e-5)


@pytest.mark.parametrize("network, names", [(OneLogit(), ["ok", "defect"]), (TinyCNN(4), class_names(4))])
def test_classify_onnx_keeps_the_sigmoid_head(tmp_path, network, names):
    pytest.importorskip("onnxruntime")
    path = export(tmp_path, network, names, "sigmoid")
    pt = torch.jit.load(str(path)).eval()
    export_onnx(pt, tmp_path / "classify.onnx")  # verified against the .pt's classify inside, or ExportError
    assert (tmp_path / "classify.onnx").stat().st_size > 0
