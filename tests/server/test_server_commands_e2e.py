"""The server commands against real TorchServes: serve, predict, scale, rotate-key and stop on this
checkout's own server; two checkouts side by side; a taken port; a death while starting; a piped demo."""

import json
import os
import socket
import subprocess

import psutil
import pytest
from PIL import Image
from server_command_helpers import TINY, build_tiny_archive, copy_checkout, mar_builder
from user_model_files import NAMES

from mar_builder.server import checkout_server
from mar_builder.server.local_server import REPO_ROOT, free_ports, read_properties, write_properties
from mar_builder.server.server_ports import PORT_COUNT, with_ports

pytestmark = pytest.mark.e2e
PHOTO = REPO_ROOT / "samples" / "chelsea.png"


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return build_tiny_archive(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def served(tiny_store, tmp_path_factory):
    """This checkout's server, in a state folder of the test's own, serving tiny.mar on free ports."""
    state = tmp_path_factory.mktemp("state")
    started = mar_builder(["serve", TINY, "--ports", "auto", "--model-store", tiny_store, "--state-dir", state])
    try:
        assert started.returncode == 0, started.stderr
        yield state, started.stderr
    finally:
        mar_builder(["stop", "--state-dir", state])


def test_serve_says_where_it_listens_and_where_its_logs_go(served):
    state, said = served
    running = checkout_server.find_running(state)
    assert running is not None
    assert f"TorchServe (pid {running.pid}) serves {TINY}" in said
    assert running.client.inference_url in said and f"{state}/logs/" in said and f"{state}/console.log" in said
    # TorchServe's own output went to the log files, not to the terminal.
    assert "org.pytorch.serve" not in said and "org.pytorch.serve" in (state / "console.log").read_text()
    assert (state / "logs" / "ts_log.log").exists() and (state / "key_file.json").exists()


def test_predict_prints_a_table_per_image_and_json_lines_with_json(served):
    state, _ = served
    shown = mar_builder(["predict", PHOTO, PHOTO, "--state-dir", state])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines.count(str(PHOTO)) == 2 and len(lines) == 2 + 2 * len(NAMES)
    rows = lines[1 : 1 + len(NAMES)]
    assert sorted(row.split("  ")[1].strip() for row in rows) == sorted(NAMES)
    assert all(row.rstrip().endswith(("%", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█")) for row in rows)
    raw = mar_builder(["predict", PHOTO, PHOTO, "--json", "--state-dir", state])
    lines = [json.loads(line) for line in raw.stdout.splitlines()]
    assert [(line["image"], line["status"]) for line in lines] == [(str(PHOTO), 200)] * 2
    answers = [line["answer"] for line in lines]
    assert sorted(answers[0]) == sorted(NAMES)
    assert abs(sum(answers[0].values()) - 1) < 1e-4
    first = rows[0].split()
    assert first[-2] == f"{list(answers[0].values())[0]:.2%}"  # most likely first, as a percentage


def test_predict_explain_writes_each_photos_picture_at_its_size(served, tmp_path):
    state, _ = served
    rocket = REPO_ROOT / "samples" / "rocket.jpg"
    out = tmp_path / "pictures"
    shown = mar_builder(["predict", "--explain", PHOTO, rocket, "--out", out, "--state-dir", state])
    assert shown.returncode == 0, shown.stderr
    for photo in (PHOTO, rocket):
        picture = out / f"{photo.stem}.explain.png"
        assert Image.open(picture).size == Image.open(photo).size
        assert f"{photo}: " in shown.stdout and f"explained in {picture}" in shown.stdout
    clash = mar_builder(["predict", "--explain", PHOTO, tmp_path / "chelsea.png", "--state-dir", state])
    assert clash.returncode != 0 and "would both be explained in chelsea.explain.png" in clash.stderr
    alone = mar_builder(["predict", PHOTO, "--out", out, "--state-dir", state])
    assert alone.returncode != 0 and "--out is where --explain writes its pictures" in alone.stderr


def test_predict_names_an_image_the_server_refused_and_exits_1(served):
    state, _ = served
    missing = state / "no-such.jpg"
    shown = mar_builder(["predict", REPO_ROOT / "README.md", missing, PHOTO, "--state-dir", state])
    assert shown.returncode == 1
    assert shown.stdout.splitlines()[0] == str(PHOTO)  # the good image is still classified
    errors = shown.stderr.strip().splitlines()
    assert errors[0].startswith("error: ") and "README.md: 400 InvalidImage: not a decodable image" in errors[0]
    assert errors[1] == f"error: {missing}: UnreadableFile: No such file or directory"
    assert errors[-1] == "error: 2 of 3 images not classified (each named above)"
    raw = mar_builder(["predict", missing, PHOTO, "--json", "--state-dir", state])
    lines = [json.loads(line) for line in raw.stdout.splitlines()]
    assert [(line["image"], line["status"]) for line in lines] == [(str(missing), 0), (str(PHOTO), 200)]


def test_scale_and_rotate_key_act_on_this_checkouts_server(served):
    state, _ = served
    scaled = mar_builder(["scale", "1", "--state-dir", state])
    assert scaled.returncode == 0, scaled.stderr
    running = checkout_server.find_running(state)
    assert [w["status"] for w in running.client.workers(TINY)] == ["READY"]
    assert f"{TINY}: 1 worker(s)" in scaled.stderr
    old = running.client.token("inference")
    rotated = mar_builder(["rotate-key", "inference", "--state-dir", state])
    assert rotated.returncode == 0, rotated.stderr
    assert running.client.token("inference") != old
    assert mar_builder(["predict", PHOTO, "--json", "--state-dir", state]).returncode == 0  # reads the new key
    assert mar_builder(["scale", "2", "--state-dir", state]).returncode == 0


def test_two_checkouts_serve_side_by_side_and_each_stops_only_its_own(tiny_store, tmp_path):
    checkouts = [copy_checkout(tmp_path / name) for name in ("first", "second")]
    shared_tmp = tmp_path / "tmp"  # both started with the same TMPDIR, as on one user's machine
    shared_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(shared_tmp), TEMP=str(shared_tmp))
    env.pop(checkout_server.STATE_DIR_ENV, None)
    try:
        for checkout in checkouts:
            started = mar_builder(["serve", TINY, "--ports", "auto", "--model-store", tiny_store], checkout, env)
            assert started.returncode == 0, started.stderr
        first, second = [checkout_server.find_running(c / ".torchserve") for c in checkouts]
        assert first.pid != second.pid and first.client.inference_url != second.client.inference_url
        assert not list(shared_tmp.iterdir())  # no machine-wide pid file, no shared worker sockets
        assert list((checkouts[0] / ".torchserve").glob(".ts.sock.*"))
        for checkout in checkouts:
            assert mar_builder(["predict", PHOTO, "--json"], checkout, env).returncode == 0

        stopped = mar_builder(["stop"], checkouts[0], env)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped this checkout's TorchServe (pid {first.pid}, {TINY}" in stopped.stderr
        assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == psutil.STATUS_ZOMBIE
        assert not (checkouts[0] / ".torchserve" / "key_file.json").exists()
        refused = mar_builder(["predict", PHOTO], checkouts[0], env)
        assert refused.returncode == 1 and "no TorchServe of this checkout is running" in refused.stderr
        assert mar_builder(["predict", PHOTO, "--json"], checkouts[1], env).returncode == 0  # still serving

        stopped = mar_builder(["stop"], checkouts[1], env)
        assert f"(pid {second.pid}, {TINY}" in stopped.stderr
        again = mar_builder(["stop"], checkouts[1], env)
        assert again.returncode == 0 and "nothing to stop" in again.stderr
    finally:
        for checkout in checkouts:
            mar_builder(["stop"], checkout, env)


def test_a_taken_port_fails_the_start_in_one_line_and_keeps_the_key_file(tiny_store, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "key_file.json").write_text('{"inference": {"key": "the good one"}}')
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        started = mar_builder(["serve", TINY, "--ports", port, "--model-store", tiny_store, "--state-dir", state])
    assert started.returncode == 1
    assert started.stderr.strip().splitlines()[-1] == (
        f"error: port {port} (inference_address, 127.0.0.1) is taken by another program; "
        "serve on others with --ports BASE or --ports auto"
    )
    assert (state / "key_file.json").read_text() == '{"inference": {"key": "the good one"}}'
    assert checkout_server.find_running(state) is None


def test_a_server_that_dies_while_starting_fails_in_one_line_and_keeps_the_key_file(tiny_store, tmp_path):
    # The user's own settings, with ports of their own (used as they are) and a JVM that cannot start.
    settings = with_ports(read_properties(), free_ports(PORT_COUNT))
    settings["vmargs"] += " -Xmx1k"  # after config.properties' own -Xmx: the JVM takes the last one
    config = tmp_path / "mine.properties"
    write_properties(config, settings)
    state = tmp_path / "state"
    state.mkdir()
    (state / "key_file.json").write_text('{"inference": {"key": "the good one"}}')
    started = mar_builder(["serve", TINY, "--config", config, "--model-store", tiny_store, "--state-dir", state])
    assert f"TorchServe for {TINY}" in started.stderr  # it got as far as starting: the ports were free
    assert started.returncode == 1
    last = started.stderr.strip().splitlines()[-1]
    assert last.startswith("error: TorchServe exited while starting: ") and "heap" in last, started.stderr
    assert (state / "key_file.json").read_text() == '{"inference": {"key": "the good one"}}'
    assert checkout_server.find_running(state) is None


def test_a_piped_demo_returns_and_prints_the_predictions(model_store, tmp_path):
    env = dict(os.environ, **{checkout_server.STATE_DIR_ENV: str(tmp_path / "state")})
    demo = f"scripts/demo.sh --ports auto --model-store {model_store} | cat"
    try:
        # A server that kept the pipe open would make this time out.
        shown = subprocess.run(
            ["bash", "-c", demo], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert shown.returncode == 0, shown.stderr
        chelsea = shown.stdout.split("samples/chelsea.png\n", 1)[1].splitlines()[0]
        assert chelsea.split("  ")[1].strip() in ("Egyptian cat", "tiger cat"), shown.stdout
        assert "org.pytorch.serve" not in shown.stdout + shown.stderr
        assert f"{tmp_path / 'state'}/logs/" in shown.stderr
    finally:
        mar_builder(["stop"], env=env)
