"""The operations command line, without a server: what it says when it cannot work."""

from mar_builder.server.operate import main


def write_config(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:9\nmanagement_address=http://127.0.0.1:9\n")
    return config


def test_without_a_key_file_it_asks_whether_torchserve_runs(tmp_path, capsys):
    argv = ["--config", str(write_config(tmp_path)), "--key-file", str(tmp_path / "key_file.json"), "scale", "2"]
    assert main(argv) == 1
    assert "no keys in" in capsys.readouterr().err


def test_scaling_to_zero_workers_is_refused(tmp_path, capsys):
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{"API": {"key": "k"}, "management": {"key": "m"}}')
    assert main(["--config", str(write_config(tmp_path)), "--key-file", str(key_file), "scale", "0"]) == 1
    assert "workers must be at least 1, got 0" in capsys.readouterr().err


def test_an_unreachable_server_is_an_error_not_a_traceback(tmp_path, capsys):
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{"API": {"key": "k"}, "management": {"key": "m"}}')
    assert main(["--config", str(write_config(tmp_path)), "--key-file", str(key_file), "scale", "2"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
