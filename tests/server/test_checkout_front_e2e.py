"""`serve --front`: this checkout's TorchServe with the nginx front before it, and `stop` stopping both."""

import json
import socket

import psutil
import pytest
import requests
from server_command_helpers import TINY, build_tiny_archive, mar_builder

from mar_builder.server import checkout_front, checkout_server
from mar_builder.server.local_server import REPO_ROOT, free_ports

pytestmark = pytest.mark.e2e
PHOTO = REPO_ROOT / "samples" / "chelsea.png"


def test_serve_with_a_front_answers_inference_only_and_stop_stops_both(tmp_path):
    (tmp_path / "tiny").mkdir()
    store = build_tiny_archive(tmp_path / "tiny")
    state = tmp_path / "state"
    (port,) = free_ports(1)
    front = f"127.0.0.1:{port}"
    try:
        started = mar_builder(
            ["serve", TINY, "--ports", "auto", "--model-store", store, "--state-dir", state, "--front", front]
        )
        assert started.returncode == 0, started.stderr
        nginx = checkout_front.front_pid(state)
        assert nginx is not None and f"front       http://{front} (nginx, pid {nginx})" in started.stderr
        running = checkout_server.find_running(state)
        key = json.loads((state / "key_file.json").read_text())["inference"]["key"]
        photo = PHOTO.read_bytes()
        url = f"http://{front}/predictions/{TINY}"
        answer = requests.put(url, data=photo, headers={"Authorization": f"bearer {key}"}, timeout=60)
        assert answer.status_code == 200 and answer.json() == running.client.predict(TINY, photo).json()
        hidden = requests.get(f"http://{front}/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert hidden.status_code == 404 and hidden.json()["type"] == "NotFound"

        stopped = mar_builder(["stop", "--state-dir", state])
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped this checkout's nginx front (pid {nginx})" in stopped.stderr
        assert not psutil.pid_exists(nginx) or psutil.Process(nginx).status() == psutil.STATUS_ZOMBIE
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        mar_builder(["stop", "--state-dir", state])


def test_a_bad_front_address_is_refused_before_torchserve_starts(tmp_path):
    refused = mar_builder(["serve", TINY, "--state-dir", tmp_path, "--front", "nowhere"])
    assert refused.returncode == 1 and "--front takes HOST:PORT" in refused.stderr
    assert checkout_server.find_running(tmp_path) is None
