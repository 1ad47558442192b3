"""Every request form docs/serving.md lists, through a real TorchServe, directly and behind the nginx front: its
own commands, a 5 MB photo."""

import base64
import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest
from image_variants import SAMPLES, encode, sample
from PIL import Image
from request_forms import b64, instances, json_request, urlencoded

pytestmark = pytest.mark.e2e

MODEL = "classifier"
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture
def server(server_or_front):
    """Every form goes to TorchServe directly and through the nginx front (`deploy nginx`, docs/security.md)."""
    return server_or_front


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 5 MB JPEG: over the shell's argument limit as base64, so the commands must read files."""
    rng = np.random.default_rng(0)
    cat = np.asarray(sample("chelsea.png").resize((3600, 2400)), dtype=np.int16)
    noisy = np.clip(cat + rng.integers(-24, 25, cat.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    Image.fromarray(noisy).save(path, "JPEG", quality=95)
    assert path.stat().st_size > 5_000_000
    return path


def curl(server, *args: str, cwd: Path | None = None) -> Tuple[int, str, Any]:
    """Run curl as docs/serving.md does, in `cwd`; (status, content type, parsed JSON body)."""
    key = ["-H", f"Authorization: Bearer {server.client.token('inference')}"]
    url = f"{server.client.inference_url}/predictions/{MODEL}"
    out = subprocess.run(
        ["curl", "-sS", *key, *args, "-w", "\n%{http_code} %{content_type}", url],
        capture_output=True,
        timeout=120,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    body, _, status_line = out.stdout.rpartition(b"\n")
    status, _, content_type = status_line.decode().partition(" ")
    return int(status), content_type, json.loads(body) if body.strip() else None


def content_type(response) -> str | None:
    return next((v for k, v in response.headers.items() if k.lower() == "content-type"), None)


def shell(command: str, cwd: Path) -> None:
    subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, check=True, timeout=60)


def close(answer: Dict[str, float], reference: Dict[str, float]) -> bool:
    return answer.keys() == reference.keys() and all(abs(answer[k] - p) < 1e-4 for k, p in reference.items())


def test_every_readme_form_answers_a_5_mb_photo_alike(server, photo):
    folder = photo.parent
    # docs/serving.md's preparation steps: base64 in a file, and JSON built around it in a file.
    shell("base64 -w0 photo.jpg > photo.b64", folder)
    shell("base64 photo.jpg > wrapped.b64", folder)
    shell("""(printf '{"data": "'; base64 -w0 photo.jpg; printf '"}') > request.json""", folder)
    # docs/serving.md's two-image JSON, verbatim.
    shell("cp photo.jpg a.jpg; cp photo.jpg b.jpg", folder)
    shell(
        """(printf '{"instances": [{"data": "'; base64 -w0 a.jpg; printf '"}, {"data": "'; base64 -w0 b.jpg
 printf '"}]}') > batch.json""",
        folder,
    )
    forms = {
        "-T": ["-T", "photo.jpg"],
        "-F data=@": ["-F", "data=@photo.jpg"],
        "--data-binary, octet-stream": ["-H", "Content-Type: application/octet-stream", "--data-binary", "@photo.jpg"],
        "--data-binary, image/jpeg": ["-H", "Content-Type: image/jpeg", "--data-binary", "@photo.jpg"],
        "JSON file": ["-H", "Content-Type: application/json", "--data-binary", "@request.json"],
        "-F data=<b64": ["-F", "data=<photo.b64"],
        "-F data=<wrapped b64": ["-F", "data=<wrapped.b64"],
        "--data-urlencode": ["--data-urlencode", "data@photo.b64"],
        "-T b64": ["-T", "photo.b64"],
    }
    answers = {}
    for name, args in forms.items():
        status, content_type, answers[name] = curl(server, *args, cwd=folder)
        assert (status, content_type) == (200, "application/json"), (name, status, answers[name])
    reference = answers["-T"]
    assert isinstance(reference, dict) and len(reference) == 5 and next(iter(reference)) in CATS
    for name, answer in answers.items():
        assert close(answer, reference), name
    json_file = ["-H", "Content-Type: application/json", "--data-binary", "@batch.json"]
    status, _, listed = curl(server, *json_file, cwd=folder)
    assert status == 200 and len(listed) == 2 and all(close(answer, reference) for answer in listed)


def test_a_urlencoded_form_as_python_requests_sends_it(server):
    photo = (SAMPLES / "chelsea.png").read_bytes()
    alone = server.client.predict(MODEL, photo).json()
    form = urlencoded([("data", b64(photo))])
    response = server.client.predict(MODEL, form.body, form.content_type)
    assert response.status == 200 and response.json() == alone
    assert content_type(response) == "application/json"


@pytest.mark.parametrize(
    "text",
    [
        lambda data: base64.b64encode(data).decode().rstrip("="),
        lambda data: base64.urlsafe_b64encode(data).decode(),
        lambda data: base64.urlsafe_b64encode(data).decode().rstrip("="),
        lambda data: "data:image/png;base64," + base64.b64encode(data).decode(),
        lambda data: base64.encodebytes(data).decode(),  # wrapped at 76 columns
    ],
    ids=["unpadded", "url-safe", "url-safe unpadded", "data URL", "wrapped"],
)
def test_base64_as_clients_write_it(server, text):
    photo = encode(sample("chelsea.png").resize((101, 67)), "PNG")  # 101x67: base64 needs padding
    encoded = text(photo)
    assert len(base64.b64encode(photo)) % 4 == 0 and base64.b64encode(photo).endswith(b"=")
    alone = server.client.predict(MODEL, photo).json()
    request = json_request({"data": encoded})
    response = server.client.predict(MODEL, request.body, request.content_type)
    assert response.status == 200, response.body[:300]
    assert response.json() == alone


def test_several_files_in_one_multipart_request_get_one_answer_each(server, tmp_path):
    names = ["chelsea.png", "coffee.png", "rocket.jpg"]
    alone = [server.client.predict(MODEL, (SAMPLES / n).read_bytes()).json() for n in names]
    same_name = [arg for n in names for arg in ("-F", f"image=@{SAMPLES / n}")]
    numbered = [arg for i, n in enumerate(names) for arg in ("-F", f"data{i or ''}=@{SAMPLES / n}")]
    for args in (same_name, numbered):
        status, content_type, answer = curl(server, *args)
        assert (status, content_type) == (200, "application/json"), answer
        assert isinstance(answer, list) and len(answer) == 3
        assert all(close(a, b) for a, b in zip(answer, alone, strict=True))


def test_list_forms_answer_in_request_order_and_a_bad_image_fails_in_its_slot(server):
    photos = [(SAMPLES / n).read_bytes() for n in ("chelsea.png", "coffee.png", "rocket.jpg")]
    alone = [server.client.predict(MODEL, p).json() for p in photos]
    forms = [
        instances(photos),
        json_request({"instances": [{"b64": b64(p)} for p in photos]}),
        json_request({"instances": [{"image_bytes": {"b64": b64(p)}} for p in photos]}),
        json_request({"data": [b64(p) for p in photos]}),
    ]
    for form in forms:
        response = server.client.predict(MODEL, form.body, form.content_type)
        assert response.status == 200 and content_type(response) == "application/json"
        assert all(close(a, b) for a, b in zip(response.json(), alone, strict=True))
    partly = instances([photos[0], b"hello world", photos[2]])
    response = server.client.predict(MODEL, partly.body, partly.content_type)
    assert response.status == 207, response.body[:300]
    first, refused, last = response.json()
    assert close(first, alone[0]) and close(last, alone[2])
    assert refused["code"] == 400 and refused["type"] == "InvalidImage"
    too_many = instances([photos[1]] * 17)
    response = server.client.predict(MODEL, too_many.body, too_many.content_type)
    assert response.status == 413 and response.json()["type"] == "TooManyImages"


def test_a_missing_end_marker_is_accepted_and_missing_pixels_are_refused(server):
    cat = sample("chelsea.png")
    jpeg, png = encode(cat, "JPEG", quality=90), encode(cat, "PNG")
    assert jpeg.endswith(b"\xff\xd9") and png.endswith(b"IEND\xaeB`\x82")
    for complete, without_end in ((jpeg, jpeg[:-2]), (png, png[:-12])):
        answer = server.client.predict(MODEL, without_end)
        assert answer.status == 200, answer.body[:300]
        assert answer.json() == server.client.predict(MODEL, complete).json()
    for cut in (jpeg[:-3], jpeg[: len(jpeg) // 2], png[: len(png) // 2]):
        response = server.client.predict(MODEL, cut)
        assert response.status == 400 and response.json()["message"].startswith("damaged ")


def test_answers_and_errors_say_they_are_json(server):
    good = server.client.predict(MODEL, (SAMPLES / "chelsea.png").read_bytes())
    bad = server.client.predict(MODEL, b"hello world")
    assert (good.status, bad.status) == (200, 400)
    assert content_type(good) == content_type(bad) == "application/json"


def test_data_binary_without_a_content_type_is_what_the_readme_says(server, tmp_path):
    """curl then sends application/x-www-form-urlencoded: TorchServe's form decoder refuses most photos
    with its own 500 before the handler runs; a body it does decode reaches the handler, which says why."""
    status, content_type, body = curl(server, "--data-binary", f"@{SAMPLES / 'chelsea.png'}")
    assert (status, body["type"]) == (500, "ErrorDataDecoderException"), body
    decodable = tmp_path / "decodable.bin"
    decodable.write_bytes(b"\x89PNG\r\n\x1a\nnot=a&real=photo")
    status, content_type, body = curl(server, "--data-binary", f"@{decodable}")
    assert (status, body["type"]) == (400, "InvalidRequest"), body
    assert "send the file with -T, or add -H 'Content-Type: application/octet-stream'" in body["message"]
