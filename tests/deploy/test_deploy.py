"""`deploy kserve|kubernetes` in-process: the layout KServe mounts, its config.properties, the manifest files."""

import json
import re
import zipfile

import pytest
import yaml

from mar_builder import cli
from mar_builder.deploy.manifests import METRICS_PORT
from mar_builder.server.local_server import read_properties

MODEL_CONFIG = {"minWorkers": 2, "maxWorkers": 3, "batchSize": 2, "maxBatchDelay": 2, "responseTimeout": 60}


@pytest.fixture
def mar(tmp_path):
    """A stand-in archive: what deploy reads from a .mar (its manifest and model-config.yaml)."""
    path = tmp_path / "store" / "landmarks.mar"
    path.parent.mkdir()
    manifest = {"model": {"modelName": "landmarks", "modelVersion": "2.1", "configFile": "model-config.yaml"}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("model-config.yaml", yaml.safe_dump(MODEL_CONFIG))
    return path


def deploy(*args):
    return cli.main(["deploy", *map(str, args)])


def test_kserve_layout_is_what_the_runtime_mounts(tmp_path, mar):
    out = tmp_path / "out"
    assert deploy("kserve", "--out", out, "--name", "landmarks", "--mar", mar, "--protocol", "v2") == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "Dockerfile",
        "config/config.properties",
        "config/log4j2.xml",
        "config/metrics.yaml",
        "inferenceservice.yaml",
        "kserve-entrypoint.sh",
        "model-store/landmarks.mar",
    ]
    assert (out / "model-store" / "landmarks.mar").read_bytes() == mar.read_bytes()
    properties = read_properties(out / "config" / "config.properties")
    snapshot = json.loads(properties["model_snapshot"])
    assert snapshot["modelCount"] == 1
    entry = {"defaultVersion": True, "marName": "landmarks.mar", **MODEL_CONFIG}
    assert snapshot["models"] == {"landmarks": {"2.1": entry}}
    assert properties["enable_envvars_config"] == "true"
    assert properties["model_store"] == "/mnt/models/model-store"
    assert properties["metrics_address"] == f"http://0.0.0.0:{METRICS_PORT}"
    assert properties["metrics_mode"] == "prometheus"
    assert properties["metrics_config"] == "/mnt/models/config/metrics.yaml"
    assert "-Dlog4j.configurationFile=/mnt/models/config/log4j2.xml" in properties["vmargs"]
    # Behind the kserve wrapper TorchServe listens on loopback only; registering models stays off.
    assert properties["inference_address"] == "http://127.0.0.1:8085"
    assert properties["management_address"] == "http://127.0.0.1:8081"
    assert properties["enable_model_api"] == "false" and properties["disable_token_authorization"] == "true"
    assert "token_expiration_min" not in properties
    assert properties["ts_open_inference_protocol"] == "true"  # v2: TorchServe's /v2/health/* routes
    isvc, policy = yaml.safe_load_all((out / "inferenceservice.yaml").read_text())
    assert isvc["metadata"]["name"] == "landmarks" and isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    assert policy["kind"] == "NetworkPolicy"


def test_kubernetes_layout_serves_inference_itself(tmp_path, mar):
    out = tmp_path / "out"
    args = ("kubernetes", "--out", out, "--name", "landmarks", "--mar", mar, "--image", "registry.example/ts:1")
    assert deploy(*args, "--max-replicas", "8") == 0
    properties = read_properties(out / "config" / "config.properties")
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert "ts_open_inference_protocol" not in properties  # v1, the default
    kinds = {d["kind"]: d for d in yaml.safe_load_all((out / "kubernetes.yaml").read_text())}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/ts:1"
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mar", "missing/landmarks.mar"], "no archive at missing/landmarks.mar: build it first with ./build_mar.sh"),
        (["--name", "Land_marks"], "--name 'Land_marks': Kubernetes needs lowercase letters"),
        (["--min-replicas", "3", "--max-replicas", "2"], "need 1 <= min_replicas <= max_replicas"),
    ],
)
def test_bad_flags_exit_1_with_one_line(tmp_path, mar, capsys, args, message):
    flags = args if "--mar" in args else ["--mar", mar, *args]
    assert deploy("kserve", "--out", tmp_path / "out", *flags) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_storage_uri_is_kserves_a_placeholder_is_named_and_kubernetes_refuses_one(tmp_path, mar, capsys, caplog):
    caplog.set_level("WARNING", logger="mar_builder")
    assert deploy("kserve", "--out", tmp_path / "out", "--name", "landmarks", "--mar", mar) == 0
    assert "storageUri is the placeholder s3://FILL-IN-BUCKET/models/landmarks" in caplog.text
    flags = ["--out", tmp_path / "k8s", "--name", "landmarks", "--mar", mar, "--storage-uri", "s3://x/y"]
    assert deploy("kubernetes", *flags) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --storage-uri is the InferenceService's (deploy kserve); a Deployment mounts the layout from a "
        "volume: drop --storage-uri"
    )
    assert not (tmp_path / "k8s").exists()
