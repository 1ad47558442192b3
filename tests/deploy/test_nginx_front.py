"""`deploy nginx` without a server: the numbers it takes from TorchServe's settings, its flags, `nginx -t`."""

import logging
import re
import subprocess

import pytest

from mar_builder import cli
from mar_builder.deploy.nginx_front import (
    TORCHSERVE_MAX_REQUEST_SIZE,
    TORCHSERVE_RESPONSE_TIMEOUT_S,
    UPSTREAM_TIMEOUT_MARGIN_S,
    front_settings,
    nginx_conf,
    parse_listen,
)
from mar_builder.deploy.nginx_process import NginxFront
from mar_builder.errors import SettingsError
from mar_builder.server.local_server import CONFIG_FILE, read_properties


def deploy(*args):
    return cli.main(["deploy", "nginx", *map(str, args)])


def directive(conf: str, name: str) -> str:
    found = re.findall(rf"^\s*{name} ([^;{{]+);", conf, re.M)
    assert len(found) == 1, (name, found)
    return found[0]


def test_the_config_follows_config_properties(tmp_path):
    assert deploy("--out", tmp_path, "--listen", "0.0.0.0:8000") == 0
    conf = (tmp_path / "nginx.conf").read_text()
    properties = read_properties(CONFIG_FILE)
    assert directive(conf, "client_max_body_size") == properties["max_request_size"] == "33554432"
    assert directive(conf, "server") == "127.0.0.1:8080"  # the upstream: inference_address
    assert directive(conf, "proxy_read_timeout") == f"{TORCHSERVE_RESPONSE_TIMEOUT_S + UPSTREAM_TIMEOUT_MARGIN_S}s"
    assert directive(conf, "large_client_header_buffers") == "2 4k"
    assert directive(conf, "listen") == "0.0.0.0:8000"
    # Nothing of management (8081), metrics (8082) or gRPC (7070, 7071) is named; nothing is written to /var.
    assert not re.search(r"808[12]|707[01]|/var/", conf)
    assert (tmp_path / "logs").is_dir() and (tmp_path / "tmp").is_dir()


def test_settings_are_read_from_the_given_torchserve_config(tmp_path):
    config = tmp_path / "ts.properties"
    config.write_text("inference_address=http://0.0.0.0:9080\ndefault_response_timeout=300\n")
    settings = front_settings(read_properties(config), "9000")
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9000)
    assert settings.upstream == "http://127.0.0.1:9080"  # 0.0.0.0 listens on loopback too
    assert settings.max_body_bytes == TORCHSERVE_MAX_REQUEST_SIZE  # TorchServe's default when unset
    assert settings.upstream_timeout_s == 300 + UPSTREAM_TIMEOUT_MARGIN_S
    https = front_settings({"inference_address": "https://[::1]:8443"}, "[::]:443")
    assert https.upstream == "https://[::1]:8443" and https.listen_host == "::"
    conf = nginx_conf(https)
    assert "proxy_pass https://torchserve$uri$is_args$args;" in conf and "listen [::]:443;" in conf


def test_a_torchserve_reachable_from_other_machines_is_named(caplog):
    with caplog.at_level(logging.WARNING, logger="mar_builder"):
        front_settings({"inference_address": "http://10.0.0.5:8080"}, "8000")
    assert "clients can reach TorchServe around the front" in caplog.text


@pytest.mark.parametrize(
    "text, expected",
    [("8000", ("127.0.0.1", 8000)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::]:8443", ("::", 8443))],
)
def test_listen_forms(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host", ":80", "0.0.0.0:", "a:b:80", "8000x"])
def test_bad_listen_is_refused(text):
    with pytest.raises(SettingsError, match="--listen takes HOST:PORT"):
        parse_listen(text)


def test_flags_are_checked(tmp_path, capsys):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    assert deploy("--out", tmp_path / "a") == 1
    assert deploy("--out", tmp_path / "a", "--listen", "8000", "--tls-cert", cert) == 1
    assert deploy("--out", tmp_path / "a", "--listen", "70000") == 1
    assert deploy("--out", tmp_path / "a", "--listen", "8000", "--image", "mine") == 1
    assert deploy("--out", tmp_path / "a", "--listen", "8000", "--config", tmp_path / "missing") == 1
    assert cli.main(["deploy", "kserve", "--out", str(tmp_path / "b"), "--listen", "8000"]) == 1
    errors = capsys.readouterr().err
    for message in [
        "deploy nginx needs --listen HOST:PORT",
        "--tls-cert and --tls-key go together",
        "--listen port must be 1 to 65535, got 70000",
        "--image: not for deploy nginx",
        "no TorchServe settings at",
        "--listen: for deploy nginx only",
    ]:
        assert message in errors, message
    assert not (tmp_path / "a").exists()


def test_nginx_accepts_the_config_with_and_without_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    for out, tls in ((tmp_path / "plain", []), (tmp_path / "tls", ["--tls-cert", cert, "--tls-key", key])):
        assert deploy("--out", out, "--listen", "127.0.0.1:8000", *tls) == 0
        check = subprocess.run(NginxFront(out, "127.0.0.1", 8000).command("-t"), capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        assert "test is successful" in check.stderr
    assert "listen 127.0.0.1:8000 ssl;" in (tmp_path / "tls" / "nginx.conf").read_text()
