"""The nginx front (`deploy nginx`) with a real nginx before a real TorchServe: what it fixes, bounds and hides.

The request forms themselves run through the front in tests/handler/test_request_forms_e2e.py and
test_untrusted_input_e2e.py (the `server_or_front` fixture); this file tests what the front adds."""

import getpass
import json
import os
import socket
import subprocess
from urllib.parse import urlsplit

import pytest
import requests
from image_variants import SAMPLES
from raw_http import exchange, request_bytes
from request_forms import b64, instances, json_request

from mar_builder.cli import main
from mar_builder.deploy.nginx_front import TORCHSERVE_MAX_REQUEST_SIZE
from mar_builder.deploy.nginx_process import NginxFront
from mar_builder.errors import ServeError
from mar_builder.server.local_server import free_ports

pytestmark = pytest.mark.e2e

MODEL = "classifier"
ROCKET = (SAMPLES / "rocket.jpg").read_bytes()
OCTET = {"Content-Type": "application/octet-stream"}


def ports(front):
    """(TorchServe's inference port, the front's port)."""
    return urlsplit(front.torchserve.properties["inference_address"]).port, front.front.port


def key(front) -> str:
    return front.torchserve.client.token("inference")


def from_nginx(answer, status: int, error_type: str) -> None:
    """nginx's own JSON answer (the config's error pages), not one TorchServe passed on."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers.get("server") == "nginx" and "x-request-id" not in answer.headers, answer.headers
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body) == {
        "code": status,
        "type": error_type,
        "message": json.loads(answer.body)["message"],
    }


def test_pipelined_requests_are_answered_in_order_through_the_front(nginx_front):
    """An explanation (seconds), a /ping and a prediction on one connection: TorchServe answers the ping at
    once, before the explanation; nginx answers the three in the order they were sent."""
    auth = {"Authorization": f"Bearer {key(nginx_front)}"}
    pipelined = (
        request_bytes("POST", f"/explanations/{MODEL}", {**auth, **OCTET}, ROCKET)
        + request_bytes("GET", "/ping", auth)
        + request_bytes("POST", f"/predictions/{MODEL}", {**auth, **OCTET}, ROCKET)
    )
    prediction = nginx_front.torchserve.client.predict(MODEL, ROCKET).json()

    def kinds(answers):
        return [
            "explanation" if b"attributions" in a.body else "ping" if b"Healthy" in a.body else "prediction"
            for a in answers
            if a.status == 200
        ]

    torchserve_port, front_port = ports(nginx_front)
    alone = exchange(torchserve_port, pipelined, 3)
    assert kinds(alone)[0] == "ping", kinds(alone)  # the control: TorchServe alone answers out of order
    through = exchange(front_port, pipelined, 3)
    assert [a.status for a in through] == [200, 200, 200]
    assert kinds(through) == ["explanation", "ping", "prediction"]
    assert json.loads(through[2].body) == prediction


def test_the_authorization_scheme_is_accepted_in_any_case(nginx_front):
    torchserve_port, front_port = ports(nginx_front)
    token = key(nginx_front)

    def predict(port, authorization):
        headers = {**OCTET, "Connection": "close", **({"Authorization": authorization} if authorization else {})}
        return exchange(port, request_bytes("POST", f"/predictions/{MODEL}", headers, ROCKET), 1)[0]

    refused = predict(torchserve_port, f"bearer {token}")  # the control: TorchServe 0.12 alone
    assert refused.status == 400 and json.loads(refused.body)["type"] == "InvalidKeyException"
    reference = json.loads(predict(torchserve_port, f"Bearer {token}").body)
    for authorization in (f"bearer {token}", f"BEARER {token}", f"bEaReR  {token} "):
        answer = predict(front_port, authorization)
        assert answer.status == 200 and json.loads(answer.body) == reference, (authorization, answer.body[:200])
    for authorization in ("bearer not-the-key", f"Basic {token}", None):  # the key is still TorchServe's to check
        answer = predict(front_port, authorization)
        assert answer.status == 400 and json.loads(answer.body)["type"] == "InvalidKeyException", authorization


def test_a_body_over_max_request_size_gets_nginx_413_and_one_at_it_reaches_the_handler(nginx_front):
    limit = int(nginx_front.torchserve.properties["max_request_size"])
    assert limit != TORCHSERVE_MAX_REQUEST_SIZE  # the front took config.properties' value, not a default
    _, front_port = ports(nginx_front)
    auth = {"Authorization": f"Bearer {key(nginx_front)}", **OCTET}
    # Content-Length alone, no body sent: nginx answers before reading it.
    head = request_bytes("POST", f"/predictions/{MODEL}", {**auth, "Content-Length": str(limit + 1)})
    from_nginx(exchange(front_port, head, 1)[0], 413, "RequestTooLarge")
    at_limit = exchange(front_port, request_bytes("POST", f"/predictions/{MODEL}", auth, bytes(limit)), 1)[0]
    assert at_limit.status == 400 and json.loads(at_limit.body)["type"] == "InvalidImage", at_limit.body[:300]


def test_oversized_headers_and_request_lines_get_nginx_4xx(nginx_front):
    _, front_port = ports(nginx_front)
    auth = {"Authorization": f"Bearer {key(nginx_front)}"}
    fits = exchange(front_port, request_bytes("GET", "/ping", {**auth, "X-Filler": "a" * 3000}), 1)[0]
    assert fits.status == 200
    for headers in ({"X-Filler": "a" * 5000}, {f"X-Filler-{i}": "a" * 3000 for i in range(3)}):
        from_nginx(
            exchange(front_port, request_bytes("GET", "/ping", {**auth, **headers}), 1)[0],
            431,
            "RequestHeaderFieldsTooLarge",
        )
    long_line = exchange(front_port, request_bytes("GET", "/ping?" + "a" * 5000, auth), 1)[0]
    assert long_line.status == 414 and long_line.headers["server"] == "nginx"  # nginx's page: no URI to redirect


def test_management_metrics_and_other_routes_are_not_reachable(nginx_front):
    _, front_port = ports(nginx_front)
    management_key = nginx_front.torchserve.client.token("management")
    auth = {"Authorization": f"Bearer {management_key}"}
    for method, path in [
        ("GET", "/models"),
        ("GET", f"/models/{MODEL}"),
        ("PUT", f"/models/{MODEL}?min_worker=3"),
        ("POST", "/models?url=classifier.mar"),
        ("POST", "/token?type=inference"),
        ("GET", "/metrics"),
        ("GET", "/api-description"),
        ("OPTIONS", "/"),
        ("POST", f"/models/{MODEL}/invoke"),
        ("POST", "/invocations"),
        ("POST", f"/predictions/{MODEL}/../../models"),  # nginx resolves the dots: /models
        ("POST", f"/predictions/{MODEL}%2F..%2F..%2Fmodels"),  # and decodes first
    ]:
        from_nginx(exchange(front_port, request_bytes(method, path, auth), 1)[0], 404, "NotFound")
    from_nginx(exchange(front_port, request_bytes("GET", f"/predictions/{MODEL}", auth), 1)[0], 405, "MethodNotAllowed")
    # A path that resolves to an inference route reaches TorchServe as that route, never as written.
    inference = {"Authorization": f"Bearer {key(nginx_front)}", **OCTET}
    detour = exchange(front_port, request_bytes("POST", f"/models/../predictions/{MODEL}", inference, ROCKET), 1)[0]
    assert (
        detour.status == 200 and json.loads(detour.body) == nginx_front.torchserve.client.predict(MODEL, ROCKET).json()
    )


def without_id(answer):
    """v2's response `id` is TorchServe's own, per request."""
    return {k: v for k, v in answer.items() if k != "id"} if isinstance(answer, dict) else answer


def test_kserve_v1_and_v2_routes_answer_as_torchserve_does(nginx_front):
    photos = [(SAMPLES / name).read_bytes() for name in ("chelsea.png", "rocket.jpg")]
    v1 = instances(photos)
    v2 = json_request(
        {"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": [b64(p) for p in photos]}]}
    )
    for path, request in [
        (f"/v1/models/{MODEL}:predict", v1),
        (f"/v2/models/{MODEL}/infer", v2),
        (f"/v1/models/{MODEL}:explain", v1),
    ]:
        answers = []
        for client in (nginx_front.torchserve.client, nginx_front.client):
            headers = {"Content-Type": request.content_type}
            answers.append(
                client.request("POST", client.inference_url + path, request.body, headers, api="inference", timeout=120)
            )
        direct, through = answers
        assert direct.status == through.status == 200, (path, through.body[:300])
        assert without_id(through.json()) == without_id(direct.json()), path


def test_ambiguous_framing_is_refused_by_nginx_and_chunked_bodies_arrive_whole(nginx_front):
    """The request-smuggling shapes of the Netty advisories in docs/security.md never reach TorchServe."""
    _, front_port = ports(nginx_front)
    auth = f"Authorization: Bearer {key(nginx_front)}\r\nContent-Type: application/octet-stream\r\n"
    start = f"POST /predictions/{MODEL} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
    chunk = f"{len(ROCKET):x}\r\n".encode() + ROCKET + b"\r\n0\r\n\r\n"
    for framing, status in [
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),  # chunked not the final coding (CVE-2026-89044)
        (b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", 400),  # both at once
        (b"\x01Transfer-Encoding: chunked\r\n", 400),  # a control character in a header name (CVE-2021-43797)
    ]:
        answer = exchange(front_port, start.encode() + framing + b"\r\n" + chunk, 1)[0]
        assert answer.status == status and answer.headers.get("server") == "nginx", (framing, answer.status)
    whole = exchange(front_port, start.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + chunk, 1)[0]
    assert whole.status == 200 and json.loads(whole.body) == nginx_front.torchserve.client.predict(MODEL, ROCKET).json()


def test_a_front_whose_torchserve_is_down_answers_503_in_json(tmp_path):
    dead, listen = free_ports(2)
    config = tmp_path / "config.properties"
    config.write_text(f"inference_address=http://127.0.0.1:{dead}\nmax_request_size=1000\n")
    user = ["--user", getpass.getuser()] if os.geteuid() == 0 else []  # as in conftest's nginx_front
    flags = ["--listen", f"127.0.0.1:{listen}", "--config", str(config), *user]
    assert main(["deploy", "nginx", "--out", str(tmp_path / "front"), *flags]) == 0
    assert "client_max_body_size 1000;" in (tmp_path / "front" / "nginx.conf").read_text()
    with NginxFront(tmp_path / "front", "127.0.0.1", listen):
        from_nginx(exchange(listen, request_bytes("GET", "/ping", {}), 1)[0], 503, "ServiceUnavailable")
        from_nginx(
            exchange(listen, request_bytes("POST", f"/predictions/{MODEL}", OCTET, bytes(1001)), 1)[0],
            413,
            "RequestTooLarge",
        )
    assert not (tmp_path / "front" / "nginx.pid").exists()  # stopped


def test_with_tls_the_front_speaks_https_only(server, tmp_path):
    cert, tls_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tls_key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    (listen,) = free_ports(1)
    user = ["--user", getpass.getuser()] if os.geteuid() == 0 else []
    tls = ["--tls-cert", str(cert), "--tls-key", str(tls_key), "--config", str(server.config), *user]
    assert main(["deploy", "nginx", "--out", str(tmp_path / "front"), "--listen", f"127.0.0.1:{listen}", *tls]) == 0
    with NginxFront(tmp_path / "front", "127.0.0.1", listen):
        url = f"https://127.0.0.1:{listen}/predictions/{MODEL}"
        auth = {"Authorization": f"bearer {server.client.token('inference')}", **OCTET}
        answer = requests.post(url, data=ROCKET, headers=auth, verify=str(cert), timeout=60)
        assert answer.status_code == 200 and answer.json() == server.client.predict(MODEL, ROCKET).json()
        plain = exchange(listen, request_bytes("POST", f"/predictions/{MODEL}", auth, ROCKET), 1)[0]
        assert plain.status == 400 and b"plain HTTP request was sent to HTTPS port" in plain.body


def test_a_port_already_taken_is_refused_and_no_nginx_is_left(tmp_path):
    """Another server holds the port: start() says so, rather than taking that server's answers for nginx's."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = tmp_path / "front"
        assert main(["deploy", "nginx", "--out", str(out), "--listen", f"127.0.0.1:{port}"]) == 0
        with pytest.raises(ServeError, match=rf"nginx front on 127\.0\.0\.1:{port}: Address already in use"):
            NginxFront(out, "127.0.0.1", port).start()
    assert not (out / "logs" / "console.log").exists()  # refused before nginx was started
