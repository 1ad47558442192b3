"""Our archives served on TorchServe 0.12.0's official image stack (Python 3.9, torch 2.4.0, Pillow 10.3.0, no
ONNX Runtime, no simplejpeg; `make image-venv`), with the project's config.properties and with the layout
`deploy` writes: every answer matches the main stack's (same top-1, probabilities within 2e-3)."""

import json
import shutil
from pathlib import Path
from typing import Dict, List

import pytest
from image_stack_setup import IMAGE_STACK_ARCHIVES, IMAGE_TORCHSERVE, require_image_stack, write_sources
from image_variants import SAMPLES, all_variants, sample

from mar_builder import cli
from mar_builder.deploy.command import missing_in_official_image, model_snapshot
from mar_builder.deploy.pod import SimulatedPod
from mar_builder.server.local_server import LocalTorchServe, read_properties, write_properties

pytestmark = pytest.mark.e2e

ARCHIVES = ["classifier", *(archive.name for archive in IMAGE_STACK_ARCHIVES)]
PROBABILITY_TOLERANCE = 2e-3
PHOTOS: Dict[str, bytes] = {
    **{path.name: path.read_bytes() for path in sorted(SAMPLES.glob("*")) if path.suffix in (".png", ".jpg")},
    **{f"chelsea-{name}": data for name, data in all_variants(sample("chelsea.png")).items()},
}


@pytest.fixture(scope="module")
def store(model_store, tmp_path_factory) -> Path:
    """Every archive of ARCHIVES, built once by the main stack: the session's default one, and IMAGE_STACK_ARCHIVES."""
    require_image_stack()
    store = tmp_path_factory.mktemp("image-stack-store")
    shutil.copyfile(model_store / "classifier.mar", store / "classifier.mar")
    sources = write_sources(tmp_path_factory.mktemp("image-stack-sources"))
    for archive in IMAGE_STACK_ARCHIVES:
        argv = ["build", "--model-store", str(store), "--name", archive.name, *archive.build_args(sources)]
        assert cli.main(argv) == 0, archive.name
    return store


def answers(client, names: List[str]) -> Dict[str, Dict[str, object]]:
    """archive -> photo -> its top-k {label: probability} (or the failed response's status and body)."""
    found: Dict[str, Dict[str, object]] = {}
    for name in names:
        for photo, data in PHOTOS.items():
            response = client.predict(name, data)
            found.setdefault(name, {})[photo] = response.json() if response.status == 200 else response
    return found


@pytest.fixture(scope="module")
def main_stack_answers(store, tmp_path_factory):
    """What the main stack's TorchServe answers, collected once; its server stops before the image stack's start."""
    models = [f"{name}={name}.mar" for name in ARCHIVES]
    with LocalTorchServe(tmp_path_factory.mktemp("main-stack"), store, models=models) as server:
        return answers(server.client, ARCHIVES)


def deploy_layout(store: Path, folder: Path) -> Path:
    """`deploy kubernetes`'s layout for the default archive, with every other archive in its model store and in its
    model_snapshot (each with the archive's own workers and batching, as deploy writes it)."""
    assert cli.main(["deploy", "kubernetes", "--out", str(folder), "--mar", str(store / "classifier.mar")]) == 0
    config = folder / "config" / "config.properties"
    properties = read_properties(config)
    snapshot = json.loads(properties["model_snapshot"])
    for name in ARCHIVES[1:]:
        shutil.copyfile(store / f"{name}.mar", folder / "model-store" / f"{name}.mar")
        snapshot["models"].update(json.loads(model_snapshot(name, store / f"{name}.mar"))["models"])
    snapshot["modelCount"] = len(snapshot["models"])
    properties["model_snapshot"] = json.dumps(snapshot, separators=(",", ":"))
    write_properties(config, properties)
    return folder


@pytest.fixture(scope="module", params=["config.properties", "deploy-layout"])
def image_stack_server(request, store, main_stack_answers, tmp_path_factory):
    """A TorchServe of the image stack serving every archive: with the project's config.properties, or started
    as a pod starts it from `deploy kubernetes`'s layout."""
    workdir = tmp_path_factory.mktemp(f"image-stack-{request.param}")
    if request.param == "config.properties":
        models = [f"{name}={name}.mar" for name in ARCHIVES]
        with LocalTorchServe(workdir, store, models=models, torchserve=IMAGE_TORCHSERVE) as server:
            yield server
        return
    layout = deploy_layout(store, tmp_path_factory.mktemp("layout"))
    with SimulatedPod(layout, workdir, None, torchserve=IMAGE_TORCHSERVE) as pod:
        for name in ARCHIVES:
            pod.client.wait_ready(name)
        yield pod


def test_every_archive_loads_on_torch_2_4_by_its_operators(store):
    """The build's own check agrees: no archive's .pt calls an operator torch 2.4.0 lacks."""
    assert {name: missing_in_official_image(store / f"{name}.mar") for name in ARCHIVES} == dict.fromkeys(ARCHIVES, [])


@pytest.mark.parametrize("name", ARCHIVES)
def test_answers_match_the_main_stack(image_stack_server, main_stack_answers, name):
    got = answers(image_stack_server.client, [name])[name]
    expected = main_stack_answers[name]
    problems = [f"{photo}: {p}" for photo in PHOTOS for p in differences(expected[photo], got[photo])]
    assert not problems, "\n".join(problems)
    common = {photo: got[photo].keys() & expected[photo].keys() for photo in PHOTOS}
    largest = max(abs(expected[photo][label] - got[photo][label]) for photo in PHOTOS for label in common[photo])
    print(f"{name}: largest probability difference from the main stack {largest:.1e}")  # shown with -s
    # Photos that all got one answer would prove little about the weights and the preprocessing.
    distinct = {tuple(round(p, 2) for p in answer.values()) for answer in expected.values()}
    assert len(distinct) > 1, f"every photo gets the same answer: {expected[next(iter(PHOTOS))]}"


def test_workers_log_what_they_fall_back_to(image_stack_server):
    """No onnxruntime and no simplejpeg in the images: the default archive classifies with its .pt and JPEGs
    decode through Pillow, each said once in the worker's log."""
    response = image_stack_server.client.predict("classifier", PHOTOS["rocket.jpg"])
    assert response.status == 200, response.body
    log = (image_stack_server.workdir / "logs" / "model_log.log").read_text(errors="replace")
    assert "runtime onnxruntime unavailable: onnxruntime is not installed in the worker's Python" in log
    assert "classifying with the .pt (TorchScript)" in log
    assert "simplejpeg is not installed: JPEGs are decoded by Pillow" in log
    assert "classify in torchscript" in log  # the handler's load line names the runtime it ended up with


def differences(expected, got) -> List[str]:
    """What differs between two top-k answers: top-1, probabilities beyond PROBABILITY_TOLERANCE, labels."""
    if not isinstance(expected, dict) or not isinstance(got, dict):
        return [f"main stack {_shown(expected)}, image stack {_shown(got)}"]
    problems = []
    if next(iter(expected)) != next(iter(got)):
        problems.append(f"top-1 {next(iter(expected))!r} on the main stack, {next(iter(got))!r} on the image stack")
    for label in expected.keys() & got.keys():
        if abs(expected[label] - got[label]) > PROBABILITY_TOLERANCE:
            problems.append(f"{label!r}: {expected[label]:.5f} on the main stack, {got[label]:.5f} on the image stack")
    # A label may leave the top-k only by swapping with one whose probability is within the tolerance.
    boundary = min(min(expected.values()), min(got.values()))
    for label in expected.keys() ^ got.keys():
        p = expected.get(label, got.get(label))
        if p - boundary > PROBABILITY_TOLERANCE:
            problems.append(f"{label!r} ({p:.5f}) is in the top-k of one stack only")
    return problems


def _shown(answer) -> str:
    return "answered" if isinstance(answer, dict) else f"failed {answer.status}: {answer.body[:200]!r}"
