"""Explanations through a real TorchServe: every request form, a target, bad input, the deletion test."""

import io
import json
from pathlib import Path

import pytest
from image_variants import SAMPLES, exif_rotated_jpeg, sample
from PIL import Image
from request_forms import b64, multipart_request

from mar_builder.validation.deletion import DELETED_FRACTION, GRID_CELLS, run, summary

pytestmark = pytest.mark.e2e

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"]
IMAGENET_SAMPLE = Path("/work/shared/imagenet-sample")


def explain(server, body, content_type="application/octet-stream", target=None):
    url = f"{server.client.inference_url}/explanations/classifier"
    headers = {"Content-Type": content_type, **({"X-Explain-Target": target} if target else {})}
    return server.client.request("POST", url, body, headers, api="inference", timeout=120)


def predicted_label(server, photo_bytes):
    return next(iter(server.client.predict("classifier", photo_bytes).json()))


def grid_fits(answer, width, height):
    rows, cols = len(answer["attributions"]), len(answer["attributions"][0])
    return min(rows, cols) == 32 and abs(cols / rows - width / height) < 0.05


@pytest.mark.parametrize("photo", PHOTOS)
def test_explanations_answer_the_predicted_label_over_the_whole_photo(server, photo):
    data = (SAMPLES / photo).read_bytes()
    response = explain(server, data)
    assert response.status == 200, response.body
    answer = response.json()
    assert answer["label"] == predicted_label(server, data) and 0 < answer["probability"] <= 1
    assert grid_fits(answer, *Image.open(SAMPLES / photo).size)


def test_multipart_base64_json_and_a_target_in_a_header_a_form_field_or_json(server):
    cat, rocket = (SAMPLES / "chelsea.png").read_bytes(), (SAMPLES / "rocket.jpg").read_bytes()
    form = multipart_request([("a", "chelsea.png", cat), ("b", "rocket.jpg", rocket)])
    listed = explain(server, form.body, form.content_type)
    assert listed.status == 200, listed.body
    assert [a["label"] for a in listed.json()] == [predicted_label(server, cat), predicted_label(server, rocket)]
    as_json = explain(server, json.dumps({"data": b64(cat)}).encode(), "application/json")
    assert as_json.status == 200 and as_json.json() == explain(server, cat).json()
    targeted = explain(server, cat, target="tiger cat").json()
    assert targeted["label"] == "tiger cat" and targeted["attributions"] != as_json.json()["attributions"]
    form = multipart_request([("data", "chelsea.png", cat), ("target", None, b"tiger cat")])
    assert explain(server, form.body, form.content_type).json() == targeted
    in_json = explain(server, json.dumps({"data": b64(cat), "target": "tiger cat"}).encode(), "application/json")
    assert in_json.json() == targeted
    unknown = explain(server, cat, target="zebra crossing")
    assert unknown.status == 400 and "is not one of the model's 1000 labels" in unknown.json()["message"]


def test_an_exif_rotated_photo_is_explained_upright(server):
    rotated = exif_rotated_jpeg(sample("chelsea.png"), quality=95)  # stored 300 x 451, shown 451 x 300
    answer = explain(server, rotated).json()
    assert len(answer["attributions"]) == 32 and len(answer["attributions"][0]) == 48


def test_bad_input_gets_the_same_error_as_a_prediction(server):
    for body in (b"hello world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20):
        explained, predicted = explain(server, body), server.client.predict("classifier", body)
        assert explained.status == predicted.status == 400
        assert explained.json() == predicted.json()


def test_deletion_test_holds_on_every_sample_photo(model_store):
    """Greying the 15 % of a 14x14 grid's cells with the most attribution drops the label's probability more
    than greying as many random cells (the mean of 5 draws), on each sample photo."""
    assert (GRID_CELLS, DELETED_FRACTION) == (14, 0.15)
    results = run(model_store / "classifier.mar", [SAMPLES / p for p in PHOTOS])
    for result in results:
        assert result.top_drop > result.random_drop, result
    assert summary(results)["top_drop_larger"] == len(PHOTOS)


def test_deletion_test_on_imagenet_sample_photos(model_store):
    if not IMAGENET_SAMPLE.is_dir():
        pytest.skip(f"{IMAGENET_SAMPLE} is absent (the shared labelled ImageNet photos)")
    photos = sorted(IMAGENET_SAMPLE.glob("*.JPEG"))[::20]  # 10 of the 200, across the classes
    overall = summary(run(model_store / "classifier.mar", photos))
    # On all 200 photos: 91.5 % of them, mean drops 0.458 against 0.209 (docs/explanations.md).
    assert overall["top_drop_larger"] >= 0.7 * len(photos), overall
    assert overall["mean_top_drop"] > 1.5 * overall["mean_random_drop"], overall


def test_the_explanation_png_of_a_served_answer_is_at_the_photos_size(server):
    from mar_builder.server.explanation_picture import explanation_png

    data = (SAMPLES / "rocket.jpg").read_bytes()
    picture = Image.open(io.BytesIO(explanation_png(data, explain(server, data).json())))
    assert picture.format == "PNG" and picture.size == Image.open(SAMPLES / "rocket.jpg").size
