"""The load generator and its bookkeeping, against a stand-in client (no server)."""

import http.client
import json
import time

import pytest

from mar_builder.server.load import Load, Outcome, Shot, failures, percentile, photo_shots
from mar_builder.server.local_server import Response


class ScriptedClient:
    """Answers by the body it is sent: b"ok" -> 200, b"bad" -> 400 JSON, b"boom" -> 500, b"reset" -> no answer."""

    def predict(self, model, body, content_type="application/octet-stream", timeout=60.0):
        time.sleep(0.001)
        if body == b"reset":
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        status = {b"ok": 200, b"bad": 400, b"boom": 500}[body]
        answer = {"tabby": 0.9} if status == 200 else {"code": status, "type": f"T{status}", "message": "why"}
        return Response(status, json.dumps(answer).encode(), {})


def outcome(status, valid=True):
    return Outcome("x", valid, status, "", "", 0.0, 0.01)


def test_every_request_is_recorded_with_its_status_and_error_type():
    shots = [Shot("ok", b"ok"), Shot("bad", b"bad", valid=False), Shot("boom", b"boom"), Shot("reset", b"reset")]
    with Load(ScriptedClient(), "m", shots, clients=3) as load:
        while len(load.outcomes()) < 40:
            time.sleep(0.01)
    outcomes = load.outcomes()
    seen = {(o.kind, o.status, o.error_type) for o in outcomes}
    assert seen == {("ok", 200, ""), ("bad", 400, "T400"), ("boom", 500, "T500"), ("reset", 0, "RemoteDisconnected")}
    assert all(o.latency > 0 and o.ended > o.started for o in outcomes)
    assert {o.kind for o in failures(outcomes)} == {"boom", "reset"}


def test_failures_are_valid_images_without_200_and_bad_inputs_without_a_4xx():
    cases = [outcome(200), outcome(413), outcome(503), outcome(400, False), outcome(200, False), outcome(500, False)]
    assert [(o.status, o.valid) for o in failures(cases)] == [(413, True), (503, True), (200, False), (500, False)]


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (1, 50, 99, 100)] == [1, 50, 99, 100]
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) == 0.0


def test_photo_shots_are_the_sample_photos():
    assert sorted(s.kind for s in photo_shots()) == ["chelsea.png", "coffee.png", "rocket.jpg"]
    assert all(s.valid and s.body for s in photo_shots())


def test_a_load_needs_shots_and_clients():
    with pytest.raises(ValueError, match="at least one shot and one client"):
        Load(ScriptedClient(), "m", [], clients=2)
