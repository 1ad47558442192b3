"""validation/served.py: the server's answers as probabilities (a fake client here; the e2e test uses a real one)."""

import json
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mar_builder.errors import ValidationError
from mar_builder.server.local_server import Response
from mar_builder.validation.mar_files import MarManifest
from mar_builder.validation.served import ServedArchive


class FakeClient:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def predict(self, model, body, timeout):
        self.calls.append((model, body))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def served_with(answer) -> ServedArchive:
    served = ServedArchive(Path("fish.mar"), MarManifest("fish", "fish.pt", None), ["tench", "goldfish", "shark"])
    served.server = SimpleNamespace(client=FakeClient(answer))
    return served


def test_a_full_answer_becomes_one_probability_per_class_in_class_order():
    body = json.dumps({"shark": 0.7, "tench": 0.2, "goldfish": 0.1}).encode()
    served = served_with(Response(200, body, {}))
    probabilities = served.classify(b"jpeg bytes")
    torch.testing.assert_close(probabilities, torch.tensor([0.2, 0.1, 0.7]))
    assert served.server.client.calls == [("fish", b"jpeg bytes")]


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            Response(400, b'{"code": 400, "type": "InvalidImage", "message": "empty body"}', {}),
            "the server answered 400 InvalidImage: empty body",
        ),
        (Response(413, b"", {}), "the server answered 413"),
        (urllib.error.URLError("Connection refused"), "no answer from the server: <urlopen error Connection refused>"),
        (TimeoutError("timed out"), "no answer from the server: timed out"),
        (Response(200, b'{"pike": 1.0}', {}), "the server answered label 'pike', which is not among"),
        (Response(200, b'"tench"', {}), "the server answered str, not a top-k object"),
    ],
)
def test_refusals_and_missing_answers_fail_the_photo_in_one_line(answer, message):
    with pytest.raises(ValidationError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        served_with(answer).classify(b"x")
