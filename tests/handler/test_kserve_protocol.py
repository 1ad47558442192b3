"""KServe v1/v2 in the handler without a server: TorchServe's envelopes made pass-through, whole batches answered."""

import base64
import importlib
import sys

import pytest
from classifier_handler import ClassifierHandler
from fake_context import FakeContext
from image_variants import encode, sample
from kserve_protocol import bypass_envelopes, request_images
from request_errors import InvalidRequest, TooManyImages

CAT = base64.b64encode(encode(sample("chelsea.png"), "JPEG")).decode()
COFFEE = base64.b64encode(encode(sample("coffee.png").resize((40, 30)), "PNG")).decode()
GARBAGE = base64.b64encode(b"garbage bytes").decode()


class Context(FakeContext):
    def get_request_id(self, idx: int) -> str:
        return f"request-{idx}"


@pytest.fixture
def envelope(monkeypatch, request):
    """TorchServe's envelope module for request.param, loaded as the worker loads it; restored afterwards,
    and unloaded, so that later tests' handlers see no envelope (as in a worker without one)."""
    module_name = f"ts.torch_handler.request_envelope.{request.param}"
    request.addfinalizer(lambda: sys.modules.pop(module_name, None))
    module = importlib.import_module(module_name)
    cls = next(c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__)
    for name in ("parse_input", "format_output"):
        monkeypatch.setattr(cls, name, getattr(cls, name))
    # A worker loads one envelope: the other one's module must not look loaded.
    other = "kservev2" if request.param == "kserve" else "kserve"
    monkeypatch.delitem(sys.modules, f"ts.torch_handler.request_envelope.{other}", raising=False)
    return cls


def handler_for(tiny_pt):
    context = Context(tiny_pt.parent, tiny_pt.name, {"minWorkers": 2, "handler": {"topk": 3}})
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


@pytest.mark.parametrize("envelope", ["kserve"], indirect=True)
def test_the_stock_kserve_envelope_loses_a_batch_and_ours_answers_each_request(tiny_pt, envelope):
    batch = [{"body": {"instances": [{"data": CAT}, {"data": COFFEE}]}}, {"body": {"instances": [{"data": CAT}]}}]
    stock = envelope(lambda data, context: [{"label": 1.0}] * len(data))
    assert len(stock.handle(batch, None)) == 1  # one response for two requests: "batch response mismatched"
    handler, context = handler_for(tiny_pt)  # initialize() makes the loaded envelope pass-through
    assert handler.kserve_envelope == "v1"
    wrapped = envelope(handler.handle)
    responses = wrapped.handle(batch, context.with_requests([{}, {}]))
    assert [len(r["predictions"]) for r in responses] == [2, 1] and context.statuses == {}
    assert responses[0]["predictions"][0] == responses[1]["predictions"][0]  # the same photo, same answer
    assert all(len(p) == 3 for r in responses for p in r["predictions"])


@pytest.mark.parametrize("envelope", ["kservev2"], indirect=True)
def test_v2_batch_with_a_bad_image_and_a_plain_request(tiny_pt, envelope):
    handler, context = handler_for(tiny_pt)
    assert handler.kserve_envelope == "v2"
    images = {"name": "images", "shape": [3], "datatype": "BYTES", "data": [CAT, GARBAGE, COFFEE]}
    v2 = {"id": "abc", "inputs": [images]}
    batch = [{"body": v2}, {"body": bytearray(base64.b64decode(CAT))}]
    v2_answer, plain_answer = envelope(handler.handle).handle(batch, context.with_requests([{}, {}]))
    outputs = {o["name"]: o for o in v2_answer["outputs"]}
    assert v2_answer["id"] == "abc" and v2_answer["model_name"] == "classifier"
    assert outputs["labels"]["shape"] == outputs["probabilities"]["shape"] == [3, 3]
    assert outputs["labels"]["data"][3:6] == ["", "", ""] and outputs["probabilities"]["data"][3:6] == [0.0] * 3
    assert outputs["errors"]["data"][0] == outputs["errors"]["data"][2] == ""
    assert outputs["errors"]["data"][1].startswith("InvalidImage: not a decodable image")
    assert list(plain_answer) == outputs["labels"]["data"][0:3]  # the raw upload of the same photo
    assert context.statuses == {}


def test_a_request_whose_every_image_is_bad_gets_its_own_4xx(tiny_pt):
    handler, context = handler_for(tiny_pt)
    v2 = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [GARBAGE]}]}
    good = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [CAT]}]}
    bad_answer, good_answer = handler.handle([{"body": v2}, {"body": good}], context.with_requests([{}, {}]))
    assert context.statuses[0][0] == 400 and 1 not in context.statuses
    assert bad_answer["error"].startswith("all 1 image(s) refused; first: InvalidImage")
    assert good_answer["id"] == "request-1" and good_answer["outputs"][2]["data"] == [""]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": []}, "must hold one BYTES input"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "datatype BYTES"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": [CAT]}]}, r"shape \[2\] does not match"),
    ],
)
def test_malformed_v2_requests_say_what_to_fix(body, message):
    with pytest.raises(InvalidRequest, match=message):
        request_images("v2", body, max_images=16)


def test_v1_instances_accept_data_b64_and_bare_strings():
    images = request_images("v1", {"instances": [{"data": CAT}, {"b64": CAT}, CAT, {"data": 5}]}, 16).images
    assert images[0] == images[1] == images[2] == base64.b64decode(CAT)
    assert isinstance(images[3], InvalidRequest)
    with pytest.raises(InvalidRequest, match="holds no images"):
        request_images("v1", {"instances": []}, 16)


def test_v1_and_v2_requests_keep_the_cap_on_images_per_request():
    with pytest.raises(TooManyImages, match="the limit is 2"):
        request_images("v1", {"instances": [CAT] * 3}, max_images=2)
    with pytest.raises(TooManyImages, match="the limit is 2"):
        request_images("v2", {"inputs": [{"name": "x", "shape": [3], "datatype": "BYTES", "data": [CAT] * 3}]}, 2)


def test_no_envelope_means_no_bypass_and_v1_bodies_stay_the_handlers(monkeypatch, tiny_pt):
    for name in ("ts.torch_handler.request_envelope.kserve", "ts.torch_handler.request_envelope.kservev2"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert bypass_envelopes() is None
    handler, context = handler_for(tiny_pt)
    assert handler.kserve_envelope is None
    # Without the kserve envelope {"instances": ...} is not v1: the handler's own parsing answers it.
    answer = handler.handle([{"body": {"instances": [{"data": CAT}]}}], context.with_requests([{}]))[0]
    assert "predictions" not in answer


def test_a_plain_request_in_a_protocol_batch_fails_as_the_handler_fails_it(tiny_pt):
    handler, context = handler_for(tiny_pt)
    v2 = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [CAT]}]}
    batch = [{"body": v2}, {"body": bytearray(b"garbage bytes")}, {"body": {"image": "no data field"}}]
    v2_answer, garbage, no_data = handler.handle(batch, context.with_requests([{}, {}, {}]))
    assert v2_answer["outputs"][2]["data"] == [""]
    assert garbage["type"] == "InvalidImage" and garbage["code"] == 400
    assert no_data["type"] == "InvalidRequest" and 'no "data" or "instances" field' in no_data["message"]
    assert sorted(context.statuses) == [1, 2] and {s[0] for s in context.statuses.values()} == {400}
