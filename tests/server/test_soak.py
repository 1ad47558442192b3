"""The soak's traffic mix, its verdict, and one short run against a real TorchServe."""

import logging

import pytest
from classifier_handler import ClassifierHandler
from fake_context import FakeContext
from PIL import Image

from mar_builder.server.load import Outcome
from mar_builder.server.soak import main, png_header, report, traffic


def test_the_mix_is_mostly_valid_images_and_every_kind_of_bad_input():
    shots = traffic()
    assert 0.55 < sum(s.valid for s in shots) / len(shots) < 0.7
    assert {s.kind for s in shots if not s.valid} == {
        "garbage bytes",
        "truncated JPEG",
        "malformed JSON",
        "pixel-bomb PNG header",
        "empty body",
    }


def test_the_bomb_header_declares_its_size_and_carries_no_pixels(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(9_000, 9_000))  # Pillow warns about, then refuses, larger ones
    assert Image.open(path).size == (9_000, 9_000) and path.stat().st_size < 100


def test_the_handler_answers_valid_shots_and_refuses_bad_ones_with_a_4xx(tiny_pt):
    context = FakeContext(tiny_pt.parent, tiny_pt.name, {"handler": {"topk": 2}})
    handler = ClassifierHandler()
    handler.initialize(context)
    shots = traffic()
    headers = [{"Content-Type": s.content_type} for s in shots]
    answers = handler.handle([{"body": bytearray(s.body)} for s in shots], context.with_requests(headers))
    for i, (shot, answer) in enumerate(zip(shots, answers, strict=True)):
        if shot.valid:
            assert i not in context.statuses and len(answer) == 2, shot.kind
        else:
            assert 400 <= context.statuses[i][0] < 500, (shot.kind, answer)


def run(status, valid=True):
    message = "Worker died." if status >= 500 else ""
    return Outcome("photo" if valid else "junk", valid, status, "", message, 10.0, 0.1)


@pytest.mark.parametrize(
    "outcomes, rss_end, passed, says",
    [
        ([run(200), run(400, False)], {1: 105, 2: 105}, True, "PASS"),
        ([run(200), run(500)], {1: 100, 2: 100}, False, "1 requests broke the contract"),
        ([run(200), run(502, False)], {1: 100, 2: 100}, False, "junk: 502"),
        ([run(200)], {1: 110, 2: 110}, False, "worker RSS grew 10.0 %"),
        ([run(200)], {1: 100, 3: 100}, False, "workers were replaced"),
    ],
)
def test_the_verdict(outcomes, rss_end, passed, says, caplog):
    with caplog.at_level(logging.INFO, logger="mar_builder.server.soak"):
        assert report(outcomes, 0.0, {1: 100, 2: 100}, rss_end) is passed
    assert says in caplog.text


@pytest.mark.e2e
def test_a_short_soak_passes_and_reports_every_number(model_store, caplog):
    with caplog.at_level(logging.INFO, logger="mar_builder.server.soak"):
        assert main(["--seconds", "8", "--warmup", "4", "--model-store", str(model_store)]) == 0
    for expected in ("requests:", "200 OK", "400 InvalidImage", "413 ImageTooLarge", "p50", "p99", "RSS", "PASS"):
        assert expected in caplog.text, expected


def test_without_an_archive_it_says_to_build_one(tmp_path, capsys):
    assert main(["--model-store", str(tmp_path)]) == 1
    assert "run `make build` first" in capsys.readouterr().err
