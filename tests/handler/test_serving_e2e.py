"""End to end: build the real default archive, serve it with a real TorchServe on free loopback ports."""

import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from image_variants import EXIF_ORIENTATION, SAMPLES, all_variants, encode, exif_rotated_jpeg, sample
from PIL import Image
from request_forms import base64_json, multipart

pytestmark = pytest.mark.e2e

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
EXPECTED_TOP1 = {
    "chelsea.png": CATS,
    "coffee.png": {"espresso", "cup", "coffee mug"},
    "rocket.jpg": {"missile", "projectile", "space shuttle"},
}


def top1(answer):
    return next(iter(answer))


@pytest.mark.parametrize("photo", sorted(EXPECTED_TOP1))
def test_sample_photos_get_sensible_top5(server, photo):
    response = server.client.predict("classifier", (SAMPLES / photo).read_bytes())
    assert response.status == 200, response.body
    answer = response.json()
    assert len(answer) == 5
    assert list(answer.values()) == sorted(answer.values(), reverse=True)
    assert top1(answer) in EXPECTED_TOP1[photo]


def test_every_format_and_mode_is_classified_as_a_cat(server):
    variants = all_variants(sample("chelsea.png"))
    failures = {}
    for name, data in variants.items():
        response = server.client.predict("classifier", data)
        if response.status != 200 or top1(response.json()) not in CATS:
            failures[name] = (response.status, response.body[:200])
    assert not failures, failures
    assert len(variants) >= 19


def test_exif_rotated_jpeg_scores_like_its_upright_original(server):
    rotated = exif_rotated_jpeg(sample("chelsea.png"), quality=95)
    # The upright original: the very pixels stored in that JPEG, turned upright, sent losslessly.
    stored = Image.open(io.BytesIO(rotated))
    assert stored.getexif()[EXIF_ORIENTATION] == 8 and stored.size == (300, 451)
    upright = encode(stored.convert("RGB").transpose(Image.Transpose.ROTATE_90), "PNG")
    from_exif = server.client.predict("classifier", rotated).json()
    from_upright = server.client.predict("classifier", upright).json()
    assert top1(from_exif) == top1(from_upright) and top1(from_exif) in CATS
    for label, p in from_upright.items():
        assert from_exif.get(label, 0.0) == pytest.approx(p, abs=1e-3), label
    sideways = server.client.predict("classifier", encode(stored.convert("RGB"), "PNG")).json()
    assert sideways != from_exif  # the orientation really changes what the model sees


def test_raw_multipart_and_base64_json_give_the_same_answer(server):
    photo = (SAMPLES / "coffee.png").read_bytes()
    client = server.client
    url = f"{client.inference_url}/predictions/classifier"
    raw_post = client.predict("classifier", photo)
    raw_put = client.request("PUT", url, photo, {"Content-Type": "application/octet-stream"}, api="inference")
    body, content_type = multipart("data", "coffee.png", photo)
    form = client.predict("classifier", body, content_type)
    as_json = client.predict("classifier", base64_json(photo), "application/json")
    text_field = client.predict("classifier", *multipart("data", None, base64.b64encode(photo)))  # -F data=<b64
    responses = (raw_post, raw_put, form, as_json, text_field)
    assert [r.status for r in responses] == [200] * 5, [r.body[:200] for r in responses]
    answers = [r.json() for r in responses]
    assert all(a == answers[0] for a in answers)


def test_readme_curl_commands_work_with_the_token(server):
    key = server.client.token("inference")
    url = f"{server.client.inference_url}/predictions/classifier"
    auth = ["-H", f"Authorization: Bearer {key}"]
    for upload in (["-T", str(SAMPLES / "chelsea.png")], ["-F", f"data=@{SAMPLES / 'chelsea.png'}"]):
        out = subprocess.run(
            ["curl", "-sS", "--fail-with-body", *auth, *upload, url], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr + out.stdout
        assert top1(json.loads(out.stdout)) in CATS
    refused = subprocess.run(
        ["curl", "-s", "-T", str(SAMPLES / "chelsea.png"), url], capture_output=True, text=True, timeout=60
    )
    assert json.loads(refused.stdout)["type"] == "InvalidKeyException"  # TorchServe answers 400 without a token


def test_concurrent_requests_of_different_sizes_each_get_their_own_answer(server):
    photos = {name: (SAMPLES / name).read_bytes() for name in EXPECTED_TOP1}
    alone = {name: server.client.predict("classifier", data).json() for name, data in photos.items()}
    jobs = [name for name in photos for _ in range(4)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(lambda n: server.client.predict("classifier", photos[n]).json(), jobs))
    for name, answer in zip(jobs, answers, strict=True):
        assert top1(answer) == top1(alone[name])
        for label, p in alone[name].items():
            assert answer[label] == pytest.approx(p, abs=1e-4)


def test_bad_input_gets_a_json_400_and_the_server_keeps_serving(server):
    response = server.client.predict("classifier", b"hello world")
    assert response.status == 400
    assert response.json() == {
        "code": 400,
        "type": "InvalidImage",
        "message": "not a decodable image (first bytes 68 65 6c 6c); "
        "supported: JPEG, PNG, GIF, WebP, BMP, TIFF, JPEG 2000, HEIC/HEIF, AVIF",
    }
    assert server.client.predict("classifier", (SAMPLES / "chelsea.png").read_bytes()).status == 200


SEED_SNIPPET = """
import sys
from PIL import Image
import torch
import torchvision.transforms as T
predictor_reloaded = torch.jit.load(sys.argv[1])
img = Image.open(sys.argv[2])
pil_to_tensor = T.ToTensor()(img).unsqueeze_(0)
softmax = predictor_reloaded(pil_to_tensor).squeeze()
max_idx = softmax.argmax()
print(f"Prediction: {predictor_reloaded.class_names[max_idx]}")
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("mar_builder", "efficientnet_lite_pytorch", "ts"))
assert not ours, ours
"""


def test_pt_inside_the_mar_reloads_standalone_with_the_tutorials_snippet(model_store, tmp_path):
    with zipfile.ZipFile(model_store / "classifier.mar") as archive:
        archive.extract("classifier.pt", tmp_path)
    script = tmp_path / "seed_snippet.py"
    script.write_text(SEED_SNIPPET)
    # -I: no current directory, PYTHONPATH or user site on the path; only the installed torch stack.
    out = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "classifier.pt"), str(SAMPLES / "chelsea.png")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    label = out.stdout.strip().removeprefix("Prediction: ")
    assert label in CATS


def test_the_default_archive_classifies_in_onnx_runtime_in_every_worker(server):
    """The answers above would be the same from the .pt's fallback: the workers' log says which ran."""
    assert server.client.predict("classifier", (SAMPLES / "rocket.jpg").read_bytes()).status == 200
    log = (server.workdir / "logs" / "model_log.log").read_text()
    loaded = [line for line in log.splitlines() if "classify in " in line and "classifier.pt" in line]
    assert len(loaded) >= 2 and all("classify in onnxruntime," in line for line in loaded), loaded
    assert "runtime onnxruntime unavailable" not in log
