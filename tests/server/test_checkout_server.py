"""Finding this checkout's server without starting one: a pid file alone does not make a server."""

import os

from mar_builder.server import checkout_server


def test_no_pid_file_means_no_server(tmp_path):
    assert checkout_server.find_running(tmp_path) is None


def test_a_pid_that_is_not_this_folders_torchserve_is_not_taken_for_it(tmp_path):
    # A stale pid file whose pid now belongs to another process (here: the test itself).
    (tmp_path / checkout_server.PID_FILE).write_text(str(os.getpid()))
    (tmp_path / checkout_server.SETTINGS_FILE).write_text("inference_address=http://127.0.0.1:8080\n")
    assert checkout_server.find_running(tmp_path) is None


def test_the_state_folder_is_the_checkouts_unless_the_environment_names_another(tmp_path, monkeypatch):
    monkeypatch.delenv(checkout_server.STATE_DIR_ENV, raising=False)
    assert checkout_server.default_state_dir() == checkout_server.REPO_ROOT.resolve() / ".torchserve"
    monkeypatch.setenv(checkout_server.STATE_DIR_ENV, str(tmp_path))
    assert checkout_server.default_state_dir() == tmp_path.resolve()
