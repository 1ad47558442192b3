"""The server subcommands without a server: what they say when there is nothing to act on."""

import pytest

from mar_builder.cli import main
from mar_builder.server.local_server import REPO_ROOT


def test_stop_without_a_server_says_so_and_succeeds(tmp_path, caplog):
    caplog.set_level("INFO", logger="mar_builder")
    assert main(["stop", "--state-dir", str(tmp_path)]) == 0
    assert f"no TorchServe of this checkout is running (state folder {tmp_path}): nothing to stop" in caplog.text


@pytest.mark.parametrize(
    "argv", [["predict", str(REPO_ROOT / "samples" / "chelsea.png")], ["scale", "2"], ["rotate-key"]]
)
def test_commands_that_need_a_server_say_how_to_start_one(argv, tmp_path, capsys):
    assert main([*argv, "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"error: no TorchServe of this checkout is running (state folder {tmp_path}); "
        "start it with `mar-builder serve` (or make serve)\n"
    )


def test_serve_refuses_a_missing_archive_naming_those_there(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "landmarks.mar").write_bytes(b"")
    assert main(["serve", "defects", "--model-store", str(store), "--state-dir", str(tmp_path / "state")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no archive {store / 'defects.mar'} (archives there: landmarks); ")
    assert err.rstrip().endswith("build it with ./build_mar.sh --name defects")


def test_ports_must_be_a_number_or_auto(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--ports", "eighty"])
    assert "expected a base port number or 'auto', got 'eighty'" in capsys.readouterr().err
