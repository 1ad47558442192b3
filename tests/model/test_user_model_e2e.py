"""End to end with your own model: checkpoint + ImageFolder classes -> .mar -> a real TorchServe -> the eager top-k."""

import numpy as np
import pytest
import torch
import torchvision
from image_variants import SAMPLES
from PIL import Image
from torch import nn

from mar_builder.cli import main as build_main
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe
from mar_builder.server.local_server import LocalTorchServe

pytestmark = pytest.mark.e2e

ARCH = "squeezenet1_1"
CLASSES = ["tench", "Goldfish", "great white shark", "axolotl"]  # ImageFolder sorts: Goldfish first
MEAN, STD = (0.45, 0.45, 0.4), (0.25, 0.25, 0.3)
RESIZE, CROP = 160, 128
TOPK = 3
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"]


def trained_network() -> nn.Module:
    """A squeezenet with random weights, its output layer scaled so that its classes are far apart."""
    torch.manual_seed(0)
    network = torchvision.models.get_model(ARCH, num_classes=len(CLASSES)).eval()
    with torch.no_grad():
        network.classifier[1].weight.mul_(10)
    return network


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    for name in CLASSES:
        (root / "train" / name).mkdir(parents=True)
    # Saved the way a DataParallel training loop saves it.
    torch.save({"epoch": 30, "state_dict": nn.DataParallel(trained_network()).state_dict()}, root / "best.pth")
    return root


@pytest.fixture(scope="module")
def served(user_files, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    code = build_main(
        [
            *("build", "--model-store", str(store), "--name", "fish", "--topk", str(TOPK)),
            *("--arch", ARCH, "--weights", str(user_files / "best.pth")),
            *("--classes-from-dir", str(user_files / "train")),
            *("--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))),
            *("--resize", str(RESIZE), "--crop", str(CROP)),
        ]
    )
    assert code == 0
    with LocalTorchServe(tmp_path_factory.mktemp("torchserve"), store, models=("fish=fish.mar",)) as server:
        yield server


def eager_topk(photo: str):
    """What the eager network gives with the same preprocessing, on the same decoded pixels."""
    names = sorted(CLASSES)
    predictor = Predictor(trained_network(), names, Recipe(resize=(RESIZE,), crop=(CROP, CROP), mean=MEAN, std=STD))
    pixels = np.asarray(Image.open(SAMPLES / photo).convert("RGB"))
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0)
    probabilities = predictor(image)[0]
    top_p, top_i = probabilities.topk(TOPK)
    return {names[i]: p for p, i in zip(top_p.tolist(), top_i.tolist(), strict=True)}


@pytest.mark.parametrize("photo", PHOTOS)
def test_served_topk_equals_the_eager_model(served, photo):
    expected = eager_topk(photo)
    gaps = np.diff(sorted(expected.values()))
    assert (gaps > 1e-3).all(), f"the test model's classes are too close to order reliably: {expected}"
    response = served.client.predict("fish", (SAMPLES / photo).read_bytes())
    assert response.status == 200, response.body
    answer = response.json()
    assert list(answer) == list(expected)  # the same labels, in the same order
    for label, p in expected.items():
        assert answer[label] == pytest.approx(p, abs=1e-4), label


def test_the_photos_do_not_all_get_the_same_answer(served):
    """Otherwise the comparison above would prove little about the weights."""
    answers = {photo: tuple(eager_topk(photo)) for photo in PHOTOS}
    assert len(set(answers.values())) > 1, answers
