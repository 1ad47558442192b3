"""End to end with Hugging Face folders: each family's save_pretrained folder -> build --hf -> its own .mar, checked
against the folder's own processor and model, then all five served by one real TorchServe."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from hf_folders import FAMILIES, LABELS, hf_probabilities, hf_reference, save_hf_folder
from image_variants import SAMPLES
from PIL import Image

from mar_builder.cli import main as build_main
from mar_builder.model.export import torchscript_deprecation_acknowledged
from mar_builder.server.local_server import LocalTorchServe

pytestmark = pytest.mark.e2e

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")
MEAN_TOLERANCE = 0.005  # the bound on preprocess: mean |difference| after normalisation
PROBABILITY_TOLERANCE = 1e-4  # the bound on classify against the model's softmax or sigmoid


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family -> (folder, the archive's .pt, classify.onnx), each family built into its own .mar in one store."""
    root = tmp_path_factory.mktemp("hf")
    store = root / "store"
    built = {}
    for family in FAMILIES:
        folder = save_hf_folder(root / family, family)
        assert build_main(["build", "--hf", str(folder), "--name", family, "--model-store", str(store)]) == 0
        unpacked = root / "unpacked" / family
        with zipfile.ZipFile(store / f"{family}.mar") as archive:
            archive.extractall(unpacked)
        built[family] = (folder, unpacked / f"{family}.pt", unpacked / "classify.onnx")
    return store, built


def load(pt):
    with torchscript_deprecation_acknowledged():
        return torch.jit.load(str(pt)).eval()


def photo(name):
    image = Image.open(SAMPLES / name).convert("RGB")
    return image, torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_class_names_and_head_come_from_config(built, family):
    pt = load(built[1][family][1])
    assert list(pt.class_names) == LABELS
    assert pt.head == ("sigmoid" if family == "convnext-multilabel" else "softmax")


@pytest.mark.parametrize("family", FAMILIES)
def test_preprocess_equals_the_folders_processor_and_classify_its_model(built, family):
    folder, pt_path, onnx_path = built[1][family]
    pt, reference = load(pt_path), hf_reference(folder)
    pixel_values = []
    for name in PHOTOS:
        image, pixels = photo(name)
        expected = reference(image)
        got = pt.preprocess(pixels)
        assert got.shape == expected.shape
        difference = (got - expected).abs().mean().item()
        assert difference <= MEAN_TOLERANCE, f"{name}: preprocess mean |diff| {difference:.3g}"
        pixel_values.append(expected)
    batch = torch.stack(pixel_values)  # the processor's own pixel values
    expected = hf_probabilities(folder, batch)
    # Classes far apart, answers that depend on the photo: the comparisons below would catch a wrong network.
    assert expected.max() - expected.min() > 0.05 and (expected[0] - expected[2]).abs().max() > 5e-3
    torch.testing.assert_close(pt.classify(batch), expected, atol=PROBABILITY_TOLERANCE, rtol=0)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (from_onnx,) = session.run(None, {"images": batch.numpy()})
    torch.testing.assert_close(torch.from_numpy(from_onnx), expected, atol=PROBABILITY_TOLERANCE, rtol=0)


def test_the_archives_serve_without_transformers(built):
    """Each .pt loads and classifies in a Python where importing transformers fails; no archive asks for it."""
    store, families = built
    paths = [str(pt) for _, pt, _ in families.values()]
    script = (
        "import sys; sys.modules['transformers'] = None\n"
        "import torch\n"
        "for path in sys.argv[1:]:\n"
        "    pt = torch.jit.load(path)\n"
        "    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)\n"
        "    print(tuple(pt.classify(pt.preprocess(image).unsqueeze(0)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"(1, {len(LABELS)})"] * len(paths)
    for family in families:
        with zipfile.ZipFile(store / f"{family}.mar") as archive:
            names = archive.namelist()
            requirements = archive.read("requirements.txt").decode() if "requirements.txt" in names else ""
        assert "transformers" not in requirements


def test_validate_reference_is_the_folders_model_with_its_processor(built):
    """validate --hf: (a) is the folder's processor and model; it agrees with the archive's .pt."""
    from mar_builder.validation.hf_reference import hf_reference as validate_reference
    from mar_builder.validation.in_process import InProcessModels, load_pt

    folder, pt_path, _ = built[1]["convnext"]
    pt, settings = load_pt(pt_path)
    network, transforms = validate_reference(folder, settings)
    models = InProcessModels(pt, settings, network, transforms)
    for name in PHOTOS:
        image, _ = photo(name)
        eager = models.eager(image)
        expected = hf_probabilities(folder, hf_reference(folder)(image).unsqueeze(0))[0]
        torch.testing.assert_close(eager, expected, atol=1e-6, rtol=0)
        assert eager.argmax() == models.exported(image).argmax()


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    store, families = built
    models = tuple(f"{family}={family}.mar" for family in families)
    with LocalTorchServe(tmp_path_factory.mktemp("torchserve"), store, models=models) as server:
        yield server


@pytest.mark.parametrize("family", FAMILIES)
def test_each_archive_serves_the_models_answers(built, served, family):
    folder = built[1][family][0]
    reference = hf_reference(folder)
    for name in PHOTOS:
        image, _ = photo(name)
        expected = hf_probabilities(folder, reference(image).unsqueeze(0))[0]
        response = served.client.predict(family, (SAMPLES / name).read_bytes())
        assert response.status == 200, response.body
        answer = response.json()
        assert list(answer.values()) == sorted(answer.values(), reverse=True), answer  # most likely first
        assert sorted(answer) == sorted(LABELS)  # top-5 of 4 classes: all of them
        # The handler decodes the file itself (JPEG with libjpeg-turbo): a grey level here and there.
        for label, probability in answer.items():
            assert abs(probability - expected[LABELS.index(label)].item()) < 2e-3, (family, name, label)
