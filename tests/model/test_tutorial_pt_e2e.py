"""End to end with the tutorial's standalone_model.pt: --pt -> .mar -> a real TorchServe -> the tutorial's own call."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torchvision.transforms as T
from image_variants import SAMPLES
from PIL import Image
from tutorial_predictor import LANDMARKS, save_tutorial_pt

from mar_builder.cli import main as build_main
from mar_builder.server.local_server import LocalTorchServe

pytestmark = pytest.mark.e2e

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"]
TOPK = 3


@pytest.fixture(scope="module")
def tutorial_pt(tmp_path_factory):
    return save_tutorial_pt(tmp_path_factory.mktemp("tutorial") / "standalone_model.pt")


@pytest.fixture(scope="module")
def served(tutorial_pt, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    code = build_main(
        ["build", "--model-store", str(store), "--name", "landmarks", "--topk", str(TOPK), "--pt", str(tutorial_pt)]
    )
    assert code == 0
    with LocalTorchServe(tmp_path_factory.mktemp("torchserve"), store, models=("landmarks=landmarks.mar",)) as server:
        yield server


def tutorial_answer(tutorial_pt, photo: str):
    """The tutorial's own call: m(T.ToTensor()(img).unsqueeze(0)), its top-k labelled with m.class_names."""
    m = torch.jit.load(str(tutorial_pt))
    img = Image.open(SAMPLES / photo).convert("RGB")
    softmax = m(T.ToTensor()(img).unsqueeze(0)).squeeze()
    top_p, top_i = softmax.topk(TOPK)
    return {m.class_names[i]: p for p, i in zip(top_p.tolist(), top_i.tolist(), strict=True)}


@pytest.mark.parametrize("photo", PHOTOS)
def test_served_answer_equals_the_tutorials_own_call(served, tutorial_pt, photo):
    expected = tutorial_answer(tutorial_pt, photo)
    response = served.client.predict("landmarks", (SAMPLES / photo).read_bytes())
    assert response.status == 200, response.body
    answer = response.json()
    assert list(answer) == list(expected) and set(answer) <= set(LANDMARKS)
    for label, p in expected.items():
        assert answer[label] == pytest.approx(p, abs=1e-4), label


def test_the_photos_do_not_all_get_the_same_answer(tutorial_pt):
    """Otherwise the comparison above would prove little."""
    answers = {photo: tuple(tutorial_answer(tutorial_pt, photo)) for photo in PHOTOS}
    assert len(set(answers.values())) > 1, answers


def test_concurrent_requests_of_different_sizes_and_a_bad_one_each_get_their_own_answer(served, tutorial_pt):
    """Requests that arrive together are batched (batchSize 2): photos of different sizes share batches with
    each other and with a body that is no image; each photo still gets the tutorial's answer, the bad one a 400."""
    expected = {photo: tutorial_answer(tutorial_pt, photo) for photo in PHOTOS}
    bodies = [(photo, (SAMPLES / photo).read_bytes()) for photo in PHOTOS] + [("garbage", b"not an image")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda item: (item[0], served.client.predict("landmarks", item[1])), bodies * 4))
    for name, response in answers:
        if name == "garbage":
            assert response.status == 400, response.body
            continue
        assert response.status == 200, response.body
        answer = response.json()
        assert list(answer) == list(expected[name])
        assert all(answer[label] == pytest.approx(p, abs=1e-4) for label, p in expected[name].items())
