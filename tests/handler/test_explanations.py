"""Explanations without a server: /explanations and KServe v1 :explain answers, their grid, target, errors, settings."""

import base64
import sys

import pytest
import torch
import torch.nn.functional as F
from classifier_handler import ClassifierHandler
from conftest import TinyCNN, class_names
from explanations import cell_sums, grid_shape
from fake_context import FakeContext
from image_decoding import decode_image
from image_variants import encode, sample
from request_forms import b64, json_request, multipart_request, raw
from torch import nn

from mar_builder.model.scripted_classifier import export_adapter

CAT_JPEG = encode(sample("chelsea.png"), "JPEG")
WIDE_PNG = encode(sample("coffee.png").resize((300, 100)), "PNG")
EXPLAIN = {"explain": "True"}  # the header TorchServe's frontend adds to /explanations and :explain


def make_handler(pt, **handler_settings):
    context = FakeContext(pt.parent, pt.name, {"minWorkers": 2, "handler": {"topk": 3, **handler_settings}})
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


def explain(handler, context, requests, extra_headers=None):
    """The handler's answers to `requests` sent to /explanations (or, where `extra_headers` has {}, /predictions)."""
    data = context.deliver(requests)
    for headers, extra in zip(context.request_headers, extra_headers or [EXPLAIN] * len(requests), strict=True):
        headers.update(extra)
    return handler.handle(data, context)


def test_the_answer_is_the_predicted_label_its_probability_and_a_grid_over_the_whole_photo(tiny_pt):
    handler, context = make_handler(tiny_pt)
    (prediction,) = handler.handle(context.deliver([raw(CAT_JPEG)]), context)
    (answer,) = explain(handler, context, [raw(CAT_JPEG)])
    assert context.statuses == {} and set(answer) == {"label", "probability", "attributions"}
    assert answer["label"] == next(iter(prediction)) and answer["probability"] == prediction[answer["label"]]
    height, width = decode_image(CAT_JPEG).shape[1:]
    grid = torch.tensor(answer["attributions"])
    assert grid.shape == grid_shape(height, width) and min(grid.shape) == 32
    assert grid.shape[1] / grid.shape[0] == pytest.approx(width / height, rel=0.05)
    # (pixel - grey) x d p(label) / d pixel through the .pt's own transforms and network, summed per cell.
    reference = torch.jit.load(str(tiny_pt))
    index = reference.class_names.index(answer["label"])
    photo = decode_image(CAT_JPEG).float().div(255).unsqueeze(0).requires_grad_(True)
    probability = F.softmax(reference.model(reference.transforms(photo)), dim=1)[0, index]
    (gradient,) = torch.autograd.grad(probability, photo)
    expected = cell_sums(((photo.detach() - 128 / 255) * gradient)[0].sum(0), grid.shape)
    torch.testing.assert_close(grid, expected, rtol=1e-3, atol=1e-7)
    assert float(grid.max()) > 0 > float(grid.min())  # signed: pixels that raise p(label), and that lower it


def test_pixels_outside_the_predictors_centre_crop_get_no_attribution(tiny_pt):
    handler, context = make_handler(tiny_pt)
    (answer,) = explain(handler, context, [raw(WIDE_PNG)])
    grid = torch.tensor(answer["attributions"])
    assert grid.shape == (32, 96)
    # resize 256 / crop 224 of a 100 x 300 photo: the crop spans the middle 87.5 x 87.5 pixels.
    assert (grid[:, :30] == 0).all() and (grid[:, -30:] == 0).all()
    assert (grid[:, 40:56] != 0).any()


def test_cell_sums_keep_the_total_and_the_grid_follows_the_aspect_ratio():
    pixels = torch.rand(37, 53)
    sums = cell_sums(pixels, (5, 7))
    assert sums.shape == (5, 7) and float(sums.sum()) == pytest.approx(float(pixels.sum()), rel=1e-5)
    assert float(sums[0, 0]) == pytest.approx(float(pixels[:7, :8].sum()), rel=1e-5)
    assert grid_shape(300, 451) == (32, 48) and grid_shape(451, 300) == (48, 32) and grid_shape(10, 20) == (10, 20)


def test_a_target_label_is_explained_instead_from_a_header_a_form_field_or_json(tiny_pt):
    handler, context = make_handler(tiny_pt)
    (prediction,) = handler.handle(context.deliver([raw(CAT_JPEG)]), context)
    other = next(name for name in class_names(5) if name != next(iter(prediction)))
    form = multipart_request([("data", "cat.jpg", CAT_JPEG), ("target", None, other.encode())])
    by_index = json_request({"data": b64(CAT_JPEG), "target": class_names(5).index(other)})
    requests = [raw(CAT_JPEG), form, json_request({"data": b64(CAT_JPEG), "target": other}), by_index]
    header = {**EXPLAIN, "X-Explain-Target": other}
    answers = explain(handler, context, requests, [header, EXPLAIN, EXPLAIN, EXPLAIN])
    assert context.statuses == {}
    for answer in answers:
        assert answer["label"] == other
    reference = torch.jit.load(str(tiny_pt))
    probabilities = reference(decode_image(CAT_JPEG).unsqueeze(0))[0]
    assert answers[0]["probability"] == pytest.approx(float(probabilities[class_names(5).index(other)]), abs=1e-6)
    assert answers[0]["attributions"] == answers[2]["attributions"] == answers[3]["attributions"]


@pytest.mark.parametrize(
    "target, message",
    [
        ("zebra", r'"target" \'zebra\' is not one of the model\'s 5 labels'),
        (7, "index 7 is out of range"),
        (1.5, "got float"),
    ],
)
def test_an_unknown_target_is_refused_with_400(tiny_pt, target, message):
    handler, context = make_handler(tiny_pt)
    (answer,) = explain(handler, context, [json_request({"data": b64(CAT_JPEG), "target": target})])
    assert context.status(0) == 400 and answer["type"] == "InvalidRequest"
    assert __import__("re").search(message, answer["message"])


def test_several_images_get_a_list_and_a_bad_one_fails_alone_as_in_predictions(tiny_pt):
    handler, context = make_handler(tiny_pt)
    two = multipart_request([("a", "a.jpg", CAT_JPEG), ("b", "b.png", b"hello world")])
    (listed,) = explain(handler, context, [two])
    (predicted,) = handler.handle(context.deliver([two]), context)
    assert isinstance(listed, list) and len(listed) == 2 and listed[0]["label"] == next(iter(predicted[0]))
    assert listed[1] == predicted[1] and listed[1]["type"] == "InvalidImage"
    assert context.status(0) == 207
    (bad,) = explain(handler, context, [raw(b"hello world")])
    assert context.status(0) == 400 and bad["type"] == "InvalidImage"
    instances = json_request({"instances": [{"data": b64(CAT_JPEG)}, {"data": b64(WIDE_PNG)}]})
    (both,) = explain(handler, context, [instances])
    assert [len(a["attributions"][0]) for a in both] == [48, 96]


def test_a_prediction_in_the_same_batch_is_answered_as_usual(tiny_pt):
    handler, context = make_handler(tiny_pt)
    (alone,) = handler.handle(context.deliver([raw(CAT_JPEG)]), context)
    prediction, explanation = explain(handler, context, [raw(CAT_JPEG), raw(CAT_JPEG)], [{}, EXPLAIN])
    assert prediction == alone and explanation["label"] == next(iter(alone))


def test_explanations_are_limited_per_request_and_can_be_turned_off(tiny_pt):
    handler, context = make_handler(tiny_pt, max_images_per_explanation=1)
    two = multipart_request([("a", "a.jpg", CAT_JPEG), ("b", "b.jpg", CAT_JPEG)])
    (answer,) = explain(handler, context, [two])
    assert context.status(0) == 413 and "(handler.max_images_per_explanation)" in answer["message"]
    handler, context = make_handler(tiny_pt, explanations=False)
    prediction, refused = explain(handler, context, [raw(CAT_JPEG), raw(CAT_JPEG)], [{}, EXPLAIN])
    assert context.status(1) == 404 and refused["type"] == "ExplanationsUnavailable"
    assert "handler.explanations: false" in refused["message"] and len(prediction) == 3
    assert handler.explainer is None


def test_without_captum_an_explanation_gets_501_and_predictions_go_on(tiny_pt, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # `from captum.attr import ...` raises ImportError
    handler, context = make_handler(tiny_pt)
    prediction, refused = explain(handler, context, [raw(CAT_JPEG), raw(CAT_JPEG)], [{}, EXPLAIN])
    assert context.status(1) == 501 and refused["type"] == "ExplainerNotInstalled"
    assert "pip install captum" in refused["message"] and len(prediction) == 3 and 0 not in context.statuses


def test_an_explanation_that_fails_inside_fails_alone_with_500(tiny_pt, monkeypatch):
    handler, context = make_handler(tiny_pt)

    def broken(image, target):
        raise RuntimeError("autograd broke")

    monkeypatch.setattr(handler.explainer, "attribution_grid", broken)
    prediction, failed = explain(handler, context, [raw(CAT_JPEG), raw(CAT_JPEG)], [{}, EXPLAIN])
    assert context.status(1) == 500 and "RuntimeError: autograd broke" in failed["message"] and len(prediction) == 3


def test_kserve_v1_explain_answers_predictions_and_explanations_and_v2_is_refused(tiny_pt):
    handler, context = make_handler(tiny_pt)
    handler.kserve_envelope = "v1"  # as behind TS_SERVICE_ENVELOPE=kserve
    body = {"instances": [{"data": b64(CAT_JPEG)}, {"data": "not base64!"}]}
    (answer,) = explain(handler, context, [json_request(body)])
    assert set(answer) == {"predictions", "explanations"} and context.statuses == {}
    assert answer["explanations"][0]["label"] == next(iter(answer["predictions"][0]))
    assert answer["predictions"][1] == answer["explanations"][1] and answer["predictions"][1]["code"] == 400
    v2 = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64(CAT_JPEG)]}]}
    (refused,) = explain(handler, context, [json_request(v2)])
    assert context.status(0) == 400 and "defines no explain" in refused["error"]


class ResizingClassifier(nn.Module):
    """A classifier with its own preprocessing in forward: float images in [0, 1] to probabilities."""

    def __init__(self, no_grad: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.head = nn.Linear(4, 3)
        self.no_grad = no_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.no_grad:
            with torch.no_grad():
                return self.probabilities(x)
        return self.probabilities(x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        # The aten kernel, not F.interpolate: a scripted F.interpolate calls operators torch 2.4 lacks, so its
        # wrapper would be saved frozen, without the `model` that gradients need (the test below).
        x = torch.ops.aten._upsample_bilinear2d_aa(x, [32, 32], False, None, None)
        return F.softmax(self.head(F.relu(self.conv(x)).mean(dim=(2, 3))), dim=1)


class InterpolatingClassifier(ResizingClassifier):
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=[32, 32], mode="bilinear", align_corners=False)
        return F.softmax(self.head(F.relu(self.conv(x)).mean(dim=(2, 3))), dim=1)


@pytest.mark.parametrize("no_grad", [False, True])
def test_a_classifier_served_through_its_own_forward_is_explained_or_refused_with_404(tmp_path, no_grad):
    pt = tmp_path / "wrapped.pt"
    export_adapter(torch.jit.script(ResizingClassifier(no_grad).eval()), class_names(3), pt)
    handler, context = make_handler(pt)
    small = encode(sample("coffee.png").resize((64, 48)), "PNG")
    (prediction,) = handler.handle(context.deliver([raw(small)]), context)
    (answer,) = explain(handler, context, [raw(small)])
    if no_grad:
        assert context.status(0) == 404 and answer["type"] == "ExplanationsUnavailable"
        assert "--rebuild" in answer["message"] and "torch.no_grad()" in answer["message"]
    else:
        assert context.statuses == {} and answer["label"] == next(iter(prediction))
        grid = torch.tensor(answer["attributions"])
        assert grid.shape == (32, 43) and float(grid.abs().sum()) > 0


def test_a_wrapped_classifier_saved_frozen_is_refused_with_404_saying_rebuild(tmp_path):
    pt = tmp_path / "wrapped.pt"
    export_adapter(torch.jit.script(InterpolatingClassifier(no_grad=False).eval()), class_names(3), pt)
    assert not hasattr(torch.jit.load(str(pt)), "model")  # frozen: F.interpolate's lanczos branch dropped
    handler, context = make_handler(pt)
    (answer,) = explain(handler, context, [raw(CAT_JPEG)])
    assert context.status(0) == 404 and answer["type"] == "ExplanationsUnavailable"
    assert "build --pt FILE --rebuild" in answer["message"]


def test_base64_json_and_raw_bodies_get_the_same_explanation(tiny_pt):
    handler, context = make_handler(tiny_pt)
    as_json = json_request({"data": base64.b64encode(CAT_JPEG).decode()})
    first, second = explain(handler, context, [raw(CAT_JPEG), as_json])
    assert first == second


def test_the_tutorials_pt_gets_404_saying_rebuild_and_its_rebuilt_predictor_is_explained(tmp_path, capsys):
    from tutorial_predictor import save_tutorial_pt
    from user_model_files import run

    tutorial = save_tutorial_pt(tmp_path / "standalone_model.pt")  # forward under torch.no_grad()
    for name, flags in (("wrapped.pt", []), ("rebuilt.pt", ["--rebuild"])):
        assert run(["export", "--output", tmp_path / name, "--pt", tutorial, *flags], capsys)[0] == 0
    handler, context = make_handler(tmp_path / "wrapped.pt")
    (refused,) = explain(handler, context, [raw(CAT_JPEG)])
    assert context.status(0) == 404 and "build --pt FILE --rebuild" in refused["message"]
    handler, context = make_handler(tmp_path / "rebuilt.pt")
    (prediction,) = handler.handle(context.deliver([raw(CAT_JPEG)]), context)
    (answer,) = explain(handler, context, [raw(CAT_JPEG)])
    assert context.statuses == {} and answer["label"] == next(iter(prediction))


@pytest.mark.parametrize(
    "num_classes, names", [(3, class_names(3)), (1, ["ok", "defect"])], ids=["multi-label", "pair"]
)
def test_a_sigmoid_head_is_explained_through_its_sigmoid(tmp_path, num_classes, names):
    """The probability explained is the one predictions answer: the .pt's own head, not a softmax."""
    from mar_builder.model.default_model import DEFAULT_RECIPE
    from mar_builder.model.export import export_predictor
    from mar_builder.model.predictor import Predictor

    torch.manual_seed(0)
    pt = tmp_path / "model" / "sigmoid.pt"
    export_predictor(Predictor(TinyCNN(num_classes), names, DEFAULT_RECIPE, head="sigmoid"), pt)
    handler, context = make_handler(pt)
    (prediction,) = handler.handle(context.deliver([raw(CAT_JPEG)]), context)
    (answer,) = explain(handler, context, [raw(CAT_JPEG)])
    assert context.statuses == {}, answer
    assert answer["label"] == next(iter(prediction)) and answer["probability"] == prediction[answer["label"]]
    reference = torch.jit.load(str(pt))
    photo = decode_image(CAT_JPEG).float().div(255).unsqueeze(0).requires_grad_(True)
    p = torch.sigmoid(reference.model(reference.transforms(photo)))
    probabilities = torch.cat([1 - p, p], dim=1) if num_classes == 1 else p
    probability = probabilities[0, names.index(answer["label"])]
    (gradient,) = torch.autograd.grad(probability, photo)
    expected = cell_sums(((photo.detach() - 128 / 255) * gradient)[0].sum(0), grid_shape(*photo.shape[2:]))
    torch.testing.assert_close(torch.tensor(answer["attributions"]), expected, rtol=1e-3, atol=1e-7)
