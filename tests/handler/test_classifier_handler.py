import base64
import re
import shutil

import pytest
import torch
from bad_inputs import OCTET, bad_requests
from classifier_handler import ClassifierHandler
from fake_context import FakeContext
from image_variants import encode, sample
from request_forms import b64, instances, json_request, multipart_request, raw

CAT_JPEG = encode(sample("chelsea.png"), "JPEG")
SMALL_PNG = encode(sample("coffee.png").resize((40, 30)), "PNG")


def make_handler(tiny_pt, topk=3, **handler_settings):
    context = FakeContext(
        tiny_pt.parent, tiny_pt.name, {"minWorkers": 2, "handler": {"topk": topk, **handler_settings}}
    )
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


def test_batch_of_mixed_sizes_gets_one_sorted_top_k_answer_each(tiny_pt):
    handler, context = make_handler(tiny_pt, topk=3)
    data = [
        {"body": bytearray(CAT_JPEG)},
        {"data": bytearray(SMALL_PNG)},
        {"body": {"data": base64.b64encode(CAT_JPEG).decode()}},
    ]
    answers = handler.handle(data, context.with_requests([{}] * 3))
    assert len(answers) == 3 and context.statuses == {}
    reference = torch.jit.load(str(tiny_pt))
    for answer in answers:
        assert len(answer) == 3
        assert list(answer.values()) == sorted(answer.values(), reverse=True)
        assert set(answer) <= set(reference.class_names)
    assert answers[0] == answers[2]  # the same photo, raw and as base64 JSON


def test_answers_equal_the_predictor_on_the_same_image(tiny_pt):
    from image_decoding import decode_image

    handler, context = make_handler(tiny_pt, topk=5)
    answer = handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))[0]
    reference = torch.jit.load(str(tiny_pt))
    probabilities = reference(decode_image(CAT_JPEG).unsqueeze(0))[0]
    expected = {reference.class_names[i]: p for i, p in enumerate(probabilities.tolist())}
    assert answer.keys() == expected.keys()
    for label, p in answer.items():
        assert p == pytest.approx(expected[label], abs=1e-6)


def test_topk_is_capped_at_the_number_of_classes(tiny_pt):
    handler, context = make_handler(tiny_pt, topk=50)
    answer = handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))[0]
    assert len(answer) == 5
    assert sum(answer.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_bad_request_fails_alone_with_its_own_status(tiny_pt):
    handler, context = make_handler(tiny_pt)
    alone = handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))[0]
    data = [{"body": bytearray(CAT_JPEG)}, {"body": bytearray(b"hello world")}, {"body": bytearray(SMALL_PNG)}]
    answers = handler.handle(data, context.with_requests([{}] * 3))
    assert answers[0] == alone
    assert len(answers[2]) == 3
    assert set(context.statuses) == {1}
    code, phrase = context.statuses[1]
    assert code == 400 and phrase.startswith("not a decodable image")
    assert answers[1]["code"] == 400 and answers[1]["type"] == "InvalidImage"
    assert context.response_headers[1]["content-type"] == "application/json"


def test_too_large_images_get_413(tiny_pt):
    handler, context = make_handler(tiny_pt, max_image_pixels=10_000)
    answers = handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))
    assert context.statuses[0][0] == 413 and answers[0]["type"] == "ImageTooLarge"


def test_form_urlencoded_uploads_get_a_hint(tiny_pt):
    handler, context = make_handler(tiny_pt)
    answers = handler.handle(
        [{"body": bytearray(b"x")}], context.with_requests([{"Content-Type": "application/x-www-form-urlencoded"}])
    )
    assert context.statuses[0][0] == 400 and "-T" in answers[0]["message"]


def test_threads_follow_cores_per_worker(tiny_pt, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    make_handler(tiny_pt)  # minWorkers 2
    assert torch.get_num_threads() == 4


def test_unknown_handler_settings_are_refused(tiny_pt):
    with pytest.raises(ValueError, match=r"unknown handler settings \['top_k'\]"):
        make_handler(tiny_pt, top_k=3)


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_model_runs_on_the_workers_device(tiny_pt, tmp_path, device):
    gpu_id = 0 if device == "cuda" else None
    model_dir = tmp_path / "served"
    shutil.copytree(tiny_pt.parent, model_dir)
    context = FakeContext(model_dir, tiny_pt.name, {"handler": {"topk": 2}}, gpu_id=gpu_id)
    handler = ClassifierHandler()
    handler.initialize(context)
    assert handler.device.type == device
    # A frozen model has no parameters left to inspect: its weights must accept inputs on the device.
    assert handler.model.classify(torch.zeros(1, 3, 224, 224, device=device)).device.type == device
    assert len(handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))[0]) == 2


def test_every_bad_image_in_a_batch_fails_alone_and_the_good_ones_get_their_answers(tiny_pt):
    handler, context = make_handler(tiny_pt)
    alone = handler.handle([{"body": bytearray(CAT_JPEG)}], context.with_requests([{}]))[0]
    bad = [case for case in bad_requests() if case.content_type == OCTET]
    data, expected = [], {}
    for case in bad:  # good, bad, good, bad, ...: every refusal sits between two answers
        data.append({"body": bytearray(CAT_JPEG)})
        expected[len(data)] = case
        data.append({"body": bytearray(case.body)})
    data.append({"body": bytearray(CAT_JPEG)})
    answers = handler.handle(data, context.with_requests([{"Content-Type": OCTET}] * len(data)))
    assert len(answers) == len(data)
    assert set(context.statuses) == set(expected)
    for idx, answer in enumerate(answers):
        if idx not in expected:
            assert answer == pytest.approx(alone, abs=1e-6)
            continue
        case = expected[idx]
        assert context.statuses[idx][0] == case.status, case.name
        assert answer["code"] == case.status and answer["type"] == case.type, case.name
        assert re.search(case.message, answer["message"]), (case.name, answer["message"])


@pytest.mark.parametrize("freeze, channels_last", [(False, False), (True, False), (False, True), (True, True)])
def test_freezing_and_channels_last_change_speed_not_answers(tiny_pt, freeze, channels_last):
    reference, context = make_handler(tiny_pt, topk=5, freeze=False, channels_last=False)
    requests = [{"body": bytearray(CAT_JPEG)}, {"body": bytearray(SMALL_PNG)}]
    expected = reference.handle(requests, context.with_requests([{}, {}]))
    handler, context = make_handler(tiny_pt, topk=5, freeze=freeze, channels_last=channels_last)
    assert handler.model.class_names == reference.class_names
    for got, want in zip(handler.handle(requests, context.with_requests([{}, {}])), expected, strict=True):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"freeze": 1}, "handler.freeze must be true or false, got 1"),
        ({"topk": True}, "handler.topk must be an integer, got True"),
        ({"jpeg_draft_factor": -1}, "handler.jpeg_draft_factor must be >= 0, got -1"),
        ({"precision": "int4"}, "handler.precision must be one of fp32, int8, got 'int4'"),
        ({"precision": "int8"}, "handler.precision int8 is classify.onnx's: it needs handler.runtime onnxruntime"),
        ({"held_out_agreement_top1": True}, "handler.held_out_agreement_top1 must be a number, got True"),
        ({"held_out_agreement_top1": 1.5}, "handler.held_out_agreement_top1 is a fraction, got 1.5"),
        ({"calibration_photos": -1}, "handler.calibration_photos must be >= 0, got -1"),
    ],
)
def test_settings_of_the_wrong_type_are_refused(tiny_pt, setting, message):
    with pytest.raises(ValueError, match=message):
        make_handler(tiny_pt, **setting)


def test_a_single_image_answer_is_a_json_top_k_object_with_a_content_type(tiny_pt):
    handler, context = make_handler(tiny_pt, topk=3)
    forms = [raw(CAT_JPEG), multipart_request([("data", "cat.jpg", CAT_JPEG)]), json_request({"data": b64(CAT_JPEG)})]
    for request in forms:
        (answer,) = handler.handle(context.deliver([request]), context)
        assert isinstance(answer, dict) and len(answer) == 3 and all(isinstance(p, float) for p in answer.values())
        assert context.status(0) == 200 and context.response_headers[0]["content-type"] == "application/json"


def test_a_list_request_gets_one_answer_per_image_in_request_order(tiny_pt):
    handler, context = make_handler(tiny_pt, topk=3)
    cat, png = (handler.handle(context.deliver([raw(image)]), context)[0] for image in (CAT_JPEG, SMALL_PNG))
    forms = [
        instances([CAT_JPEG, SMALL_PNG, CAT_JPEG]),
        json_request({"data": [b64(CAT_JPEG), b64(SMALL_PNG), b64(CAT_JPEG)]}),
        multipart_request([("image", "a.jpg", CAT_JPEG), ("image", "b.png", SMALL_PNG), ("image", "c.jpg", CAT_JPEG)]),
        multipart_request([("data", "a.jpg", CAT_JPEG), ("data2", "b.png", SMALL_PNG), ("data3", "c.jpg", CAT_JPEG)]),
    ]
    for form in forms:
        (answer,) = handler.handle(context.deliver([form]), context)
        assert answer == [pytest.approx(cat, abs=1e-6), pytest.approx(png, abs=1e-6), pytest.approx(cat, abs=1e-6)]
        assert context.status(0) == 200 and context.response_headers[0]["content-type"] == "application/json"


def test_a_bad_image_in_a_list_gets_its_error_in_its_slot_and_207(tiny_pt):
    handler, context = make_handler(tiny_pt, topk=3)
    cat = handler.handle(context.deliver([raw(CAT_JPEG)]), context)[0]
    request = json_request({"instances": [{"data": b64(CAT_JPEG)}, {"data": b64(b"hello world")}, {"data": "%"}]})
    (answer,) = handler.handle(context.deliver([request]), context)
    assert answer[0] == pytest.approx(cat, abs=1e-6)
    assert answer[1]["code"] == 400 and answer[1]["type"] == "InvalidImage"
    assert answer[2]["code"] == 400 and answer[2]["type"] == "InvalidRequest"
    code, phrase = context.statuses[0]
    assert code == 207 and phrase == "2 of 3 images refused; see each one's answer"
    assert context.response_headers[0]["content-type"] == "application/json"
    (refused,) = handler.handle(context.deliver([instances([b"hello", b"world"])]), context)
    assert context.status(0) == 400 and [a["type"] for a in refused] == ["InvalidImage", "InvalidImage"]


def test_more_images_than_the_cap_get_413_too_many_images(tiny_pt):
    handler, context = make_handler(tiny_pt, max_images_per_request=2)
    (answer,) = handler.handle(context.deliver([instances([CAT_JPEG] * 3)]), context)
    assert context.status(0) == 413 and answer["type"] == "TooManyImages"
    assert answer["message"].startswith("the request holds 3 images; the limit is 2")
    assert len(handler.handle(context.deliver([instances([CAT_JPEG] * 2)]), context)[0]) == 2


@pytest.mark.parametrize("classify_batch_size, passes", [(0, [4]), (2, [2, 2]), (3, [3, 1])])
def test_the_images_of_every_request_in_a_batch_are_classified_together(tiny_pt, classify_batch_size, passes):
    handler, context = make_handler(tiny_pt, topk=3, freeze=False, classify_batch_size=classify_batch_size)
    alone = [handler.handle(context.deliver([raw(image)]), context)[0] for image in (CAT_JPEG, SMALL_PNG)]
    batch_sizes = []
    classify = handler.classify

    def recording(batch):
        batch_sizes.append(batch.shape[0])
        return classify(batch)

    handler.classify = recording
    requests = [raw(CAT_JPEG), instances([SMALL_PNG, CAT_JPEG, b"broken"]), raw(SMALL_PNG)]
    answers = handler.handle(context.deliver(requests), context)
    assert batch_sizes == passes
    assert answers[0] == pytest.approx(alone[0], abs=1e-6) and answers[2] == pytest.approx(alone[1], abs=1e-6)
    assert answers[1][:2] == [pytest.approx(alone[1], abs=1e-6), pytest.approx(alone[0], abs=1e-6)]
    assert answers[1][2]["type"] == "InvalidImage" and context.status(1) == 207


def test_a_jpeg_missing_only_its_end_marker_is_answered_and_a_cut_one_refused(tiny_pt):
    handler, context = make_handler(tiny_pt)
    assert CAT_JPEG.endswith(b"\xff\xd9")
    answers = handler.handle(context.deliver([raw(CAT_JPEG), raw(CAT_JPEG[:-2]), raw(CAT_JPEG[:-3])]), context)
    assert answers[1] == answers[0] and context.status(1) == 200
    assert context.status(2) == 400 and answers[2]["message"].startswith("damaged JPEG image 451x300")


def test_the_handler_logs_how_many_images_of_a_batch_were_refused(tiny_pt, caplog):
    handler, context = make_handler(tiny_pt)
    requests = [raw(CAT_JPEG), raw(b"hello world"), instances([CAT_JPEG, b"x"]), json_request({"nothing": 1})]
    with caplog.at_level("INFO", logger="classifier_handler"):
        handler.handle(context.deliver(requests), context)
    assert "batch of 4 requests, 4 images: 3 refused" in caplog.text
