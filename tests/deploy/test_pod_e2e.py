"""The KServe pod simulated: TorchServe started from `deploy kserve`'s layout as the runtime starts it, called
over KServe v1 and v2 (also by third-party clients), and a plain TorchServe's /v2 route without an envelope."""

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import pytest
from image_variants import SAMPLES

from mar_builder import cli
from mar_builder.constants import REPO_ROOT
from mar_builder.deploy.pod import SimulatedPod

pytestmark = pytest.mark.e2e

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"]
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
EXPECTED_TOP1 = {"chelsea.png": CATS, "coffee.png": {"espresso", "cup", "coffee mug"}, "rocket.jpg": {"missile"}}
NOT_AN_IMAGE = base64.b64encode(b"this is not an image").decode()
TOPK = 5
CLIENTS_PYTHON = REPO_ROOT / ".venv-clients" / "bin" / "python"


def b64(photo: str) -> str:
    return base64.b64encode((SAMPLES / photo).read_bytes()).decode()


@pytest.fixture(scope="module", params=["v1", "v2", None], ids=["kserve-v1", "kserve-v2", "no-envelope"])
def pod(request, model_store, tmp_path_factory) -> SimulatedPod:
    """One pod per protocol (None: a plain TorchServe, no TS_SERVICE_ENVELOPE), from `deploy kserve`'s layout."""
    layout = tmp_path_factory.mktemp("layout")
    protocol = request.param or "v2"
    args = ["deploy", "kserve", "--out", str(layout), "--mar", str(model_store / "classifier.mar")]
    assert cli.main([*args, "--protocol", protocol]) == 0
    with SimulatedPod(layout, tmp_path_factory.mktemp("pod"), request.param) as running:
        yield running


def post(pod: SimulatedPod, path: str, body: Any) -> Any:
    headers = {"Content-Type": "application/json"}
    return pod.client.request("POST", pod.client.inference_url + path, json.dumps(body).encode(), headers)


def classify(pod: SimulatedPod, images: List[str]) -> List[Any]:
    """Per image: its top-k {label: probability} or an error, through the pod's protocol (v2 without envelope)."""
    if pod.protocol == "v1":
        response = post(pod, "/v1/models/classifier:predict", {"instances": [{"data": i} for i in images]})
        assert response.status == 200, response.body
        return response.json()["predictions"]
    response = post(pod, "/v2/models/classifier/infer", v2_request(images))
    assert response.status == 200, response.body
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    labels, probabilities, errors = (outputs[n]["data"] for n in ("labels", "probabilities", "errors"))
    rows = [slice(row * TOPK, (row + 1) * TOPK) for row in range(len(images))]
    return [
        {"error": errors[i]} if errors[i] else dict(zip(labels[rows[i]], probabilities[rows[i]], strict=True))
        for i in range(len(images))
    ]


def v2_request(images: List[str], request_id: str = "") -> dict:
    body = {"inputs": [{"name": "images", "shape": [len(images)], "datatype": "BYTES", "data": images}]}
    return {"id": request_id, **body} if request_id else body


def test_several_photos_in_one_request_answer_in_order(pod):
    answers = classify(pod, [b64(p) for p in PHOTOS])
    for photo, answer in zip(PHOTOS, answers, strict=True):
        assert len(answer) == TOPK and list(answer.values()) == sorted(answer.values(), reverse=True)
        assert next(iter(answer)) in EXPECTED_TOP1[photo], (photo, answer)


def test_a_bad_image_fails_alone_in_its_slot(pod):
    answers = classify(pod, [b64("coffee.png"), NOT_AN_IMAGE, b64("chelsea.png")])
    assert next(iter(answers[0])) in EXPECTED_TOP1["coffee.png"]
    assert next(iter(answers[2])) in CATS
    # v1: the handler's error object in the slot; v2: the message in the `errors` output's row.
    assert "InvalidImage" in json.dumps(answers[1]) and "not a decodable image" in json.dumps(answers[1])


def test_four_concurrent_clients_with_batch_size_2_each_get_their_own_answers(pod):
    before = predict_batches(pod)
    requests = [[b64(PHOTOS[i % 3])] * (1 + i % 2) for i in range(24)]  # 1 or 2 images each
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda images: classify(pod, images), requests))
    for images, answer in zip(requests, answers, strict=True):
        photo = PHOTOS[[b64(p) for p in PHOTOS].index(images[0])]
        assert len(answer) == len(images) and all(next(iter(a)) in EXPECTED_TOP1[photo] for a in answer)
    # PredictTime is observed once per classified batch: fewer batches than requests means TorchServe
    # did hand the handler batches of 2 requests, and each request still got its own answer.
    assert predict_batches(pod) - before < len(requests)
    assert "number of batch response mismatched" not in (pod.workdir / "logs" / "model_log.log").read_text()


def predict_batches(pod: SimulatedPod) -> float:
    scrape = pod.client.metrics()
    return sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines() if line.startswith("PredictTime_count"))


def test_v2_response_names_the_model_echoes_the_id_and_shapes_outputs(pod):
    if pod.protocol == "v1":
        pytest.skip("v2 responses: the kservev2 pod and the plain TorchServe")
    response = post(pod, "/v2/models/classifier/infer", v2_request([b64("coffee.png"), b64("rocket.jpg")], "req-7"))
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("classifier", "1.0", "req-7")
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in body["outputs"]}
    assert outputs == {"labels": ("BYTES", [2, 5]), "probabilities": ("FP32", [2, 5]), "errors": ("BYTES", [2])}


def test_malformed_protocol_requests_get_400_with_an_error_message(pod):
    if pod.protocol == "v1":
        response = post(pod, "/v1/models/classifier:predict", {"instances": "not a list"})
        assert response.status == 400 and "instances" in response.json()["error"]
    else:
        bad = {"inputs": [{"name": "images", "shape": [3], "datatype": "BYTES", "data": [b64("coffee.png")]}]}
        response = post(pod, "/v2/models/classifier/infer", bad)
        assert response.status == 400
        assert "shape [3] does not match its 1 data elements" in response.json()["error"]


def test_open_inference_protocol_health_routes(pod):
    if pod.protocol != "v2":
        pytest.skip("TorchServe turns /v2/health/* on with ts_open_inference_protocol, in the v2 layout")
    for path in ("/v2/health/live", "/v2/health/ready"):
        response = pod.client.request("GET", pod.client.inference_url + path)
        assert response.status == 200, (path, response.body)


def test_the_scrape_shows_the_handlers_metrics(pod):
    classify(pod, [b64("coffee.png"), NOT_AN_IMAGE])
    scrape = pod.client.metrics()
    for metric in ("ImageDecodeTime_count", "PredictTime_count", 'RejectedRequests{ErrorType="InvalidImage"'):
        assert metric in scrape, metric


def test_kserve_sdk_rest_client_gets_the_right_labels(pod):
    # The SDK lives in .venv-clients (make venv): its pins (psutil<6) cannot share TorchServe's venv.
    # Missing is a failure, not a skip.
    assert CLIENTS_PYTHON.exists(), f"{CLIENTS_PYTHON} is missing: run make venv"
    script = Path(__file__).with_name("kserve_sdk_call.py")
    protocol = pod.protocol or "v2"
    args = [pod.client.inference_url, protocol, "classifier", str(TOPK)]
    images = json.dumps([b64(p) for p in PHOTOS])
    out = subprocess.run(
        [str(CLIENTS_PYTHON), str(script), *args], input=images, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    top1 = json.loads(out.stdout)
    assert all(label in EXPECTED_TOP1[photo] for photo, label in zip(PHOTOS, top1, strict=True)), top1


def test_tritonclient_http_gets_the_right_labels(pod):
    if pod.protocol == "v1":
        pytest.skip("tritonclient speaks v2 only")
    import numpy as np
    import tritonclient.http as http  # requirements-dev.txt
    client = http.InferenceServerClient(pod.client.inference_url.removeprefix("http://"))
    images = http.InferInput("images", [3], "BYTES")
    images.set_data_from_numpy(np.array([b64(p) for p in PHOTOS], dtype=object), binary_data=False)
    outputs = [http.InferRequestedOutput(n, binary_data=False) for n in ("labels", "probabilities")]
    result = client.infer("classifier", [images], outputs=outputs)
    labels, probabilities = result.as_numpy("labels"), result.as_numpy("probabilities")
    assert labels.shape == probabilities.shape == (3, TOPK) and probabilities.dtype == np.float32
    top1 = [label.decode() if isinstance(label, bytes) else label for label in labels[:, 0]]
    assert all(label in EXPECTED_TOP1[photo] for photo, label in zip(PHOTOS, top1, strict=True)), top1
    client.close()


def test_the_pod_runs_the_layouts_config_with_only_paths_and_ports_changed(pod):
    generated = (pod.layout / "config" / "config.properties").read_text().replace("/mnt/models", str(pod.layout))
    used = pod.config.read_text()
    assert {line for line in generated.splitlines() if not line.startswith("#")} == set(used.splitlines())
    apis = ("INFERENCE_ADDRESS", "MANAGEMENT_ADDRESS", "METRICS_ADDRESS", "GRPC_INFERENCE_PORT", "GRPC_MANAGEMENT_PORT")
    assert set(pod.ports) == {f"TS_{api}" for api in apis}
    assert pod.env().get("TS_SERVICE_ENVELOPE") == {"v1": "kserve", "v2": "kservev2", None: None}[pod.protocol]
    assert Path(pod.args()[0]).name == "torchserve" and pod.args()[1:2] == ["--start"]


def test_probes_and_the_kserve_wrapper_need_no_token_in_the_pod(pod):
    # Token authorization is off in the layout (docs/deploy.md, Security in a cluster): what the kubelet's
    # /ping probe and the kserve wrapper send, requests without a key, must be answered.
    assert not pod.client.key_file.exists()
    assert pod.client.request("GET", pod.client.inference_url + "/ping").status == 200
    description = pod.client.request("GET", f"{pod.client.management_url}/models/classifier")
    assert description.status == 200 and description.json()[0]["batchSize"] == 2


def test_a_plain_torchserves_v1_route_reaches_the_handler(pod):
    if pod.protocol is not None:
        pytest.skip("the plain TorchServe (no envelope)")
    # TorchServe 0.12's frontend routes /v1/models/<name>:predict to the model without an envelope: the
    # handler answers the body as it answers /predictions (here its single-image JSON form).
    response = post(pod, "/v1/models/classifier:predict", {"data": b64("coffee.png")})
    assert response.status == 200, response.body
    assert next(iter(response.json())) in EXPECTED_TOP1["coffee.png"]


def test_explain_answers_the_predicted_label_on_v1_and_is_refused_on_v2(pod):
    images = [b64("chelsea.png"), NOT_AN_IMAGE]
    if pod.protocol == "v1":
        response = post(pod, "/v1/models/classifier:explain", {"instances": [{"data": i} for i in images]})
        assert response.status == 200, response.body
        body = response.json()
        assert set(body) == {"predictions", "explanations"}  # KServe's v1 explain response
        explanation = body["explanations"][0]
        assert explanation["label"] == next(iter(body["predictions"][0])) and explanation["label"] in CATS
        assert len(explanation["attributions"]) == 32 and len(explanation["attributions"][0]) == 48
        assert body["explanations"][1]["type"] == "InvalidImage"
    else:
        response = post(pod, "/v2/models/classifier/explain", v2_request(images))
        assert response.status == 400 and "defines no explain" in response.json()["error"]
