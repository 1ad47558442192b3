"""validation/in_process.py: (a) with PIL preprocessing, (b) the .pt on ToTensor floats, and the eager network."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from user_model_files import ARCH, NAMES, write_user_files

from mar_builder.errors import SettingsError, ValidationError
from mar_builder.model.default_model import DEFAULT_RECIPE
from mar_builder.model.recipe import Recipe
from mar_builder.validation.in_process import (
    InProcessModels,
    PtSettings,
    eager_network,
    exif_rotates,
    load_pt,
    read_photo,
)

NO_FLAGS = {"arch": None, "model_file": None, "model_kwargs": None, "weights": None, "allow_pickle": False}


@pytest.fixture
def photo(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def test_the_pt_settings_and_both_paths(tiny_pt, photo):
    pt, settings = load_pt(tiny_pt)
    assert settings == PtSettings(tuple(f"class_{i}" for i in range(5)), DEFAULT_RECIPE, "softmax")
    models = InProcessModels(pt, settings, eager_network=None)
    _, image = read_photo(photo)
    # (a): PIL Resize/CenterCrop/ToTensor/Normalize, then the .pt's own network and a softmax.
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    expected = torch.softmax(pt.model(reference(image).unsqueeze(0)), dim=1)[0]
    torch.testing.assert_close(models.eager(image), expected)
    # (b): the tutorial's call.
    torch.testing.assert_close(models.exported(image), pt(T.ToTensor()(image).unsqueeze(0))[0])
    assert models.eager(image).shape == (5,) and models.eager(image).dtype == torch.float32


def test_a_pt_that_is_not_a_predictor_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(
        ValidationError, match=r"lacks class_names, model, preprocess, classify, mean, std, resize_size, crop_size"
    ):
        load_pt(path)
    (tmp_path / "text.pt").write_text("no")
    with pytest.raises(ValidationError, match="text.pt in the archive is not a TorchScript file"):
        load_pt(tmp_path / "text.pt")


def test_the_eager_network_from_build_flags_carries_the_checkpoint(tmp_path):
    files = write_user_files(tmp_path)
    settings = PtSettings(tuple(NAMES), Recipe(resize=(72,), crop=(64, 64), mean=(0.5,) * 3, std=(0.5,) * 3), "softmax")
    assert eager_network(settings, False, NO_FLAGS) is None
    network = eager_network(settings, False, dict(NO_FLAGS, arch=ARCH, weights=files / "arch.ckpt"))
    saved = torch.load(files / "arch.ckpt", weights_only=True)["state_dict"]
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    with pytest.raises(SettingsError, match="--arch needs --weights CKPT"):
        eager_network(settings, False, dict(NO_FLAGS, arch=ARCH))
    with pytest.raises(ValidationError, match="--default-model excludes --arch"):
        eager_network(settings, True, dict(NO_FLAGS, arch=ARCH, weights=files / "arch.ckpt"))


def test_unreadable_photos_and_exif_rotation(tmp_path, photo):
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(OSError, match=r"not an image Pillow can identify \(first bytes 68 65 6c 6c\)"):
        read_photo(tmp_path / "notes.jpg")
    with pytest.raises(FileNotFoundError):
        read_photo(tmp_path / "missing.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photo).save(tmp_path / "turned.jpg", exif=exif.tobytes())
    assert exif_rotates((tmp_path / "turned.jpg").read_bytes()) is True
    assert exif_rotates(photo.read_bytes()) is False


def test_the_users_own_transform_is_the_eager_reference(tiny_pt, photo):
    """validate --transforms: (a) runs the user's transform, so a skew against the archive's recipe shows."""
    pt, settings = load_pt(tiny_pt)
    _, image = read_photo(photo)
    skewed = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])  # a squash
    models = InProcessModels(pt, settings, eager_network=None, transforms=skewed)
    expected = torch.softmax(pt.model(skewed(image).unsqueeze(0)), dim=1)[0]
    torch.testing.assert_close(models.eager(image), expected)
    assert not torch.allclose(models.eager(image), InProcessModels(pt, settings, None).eager(image), atol=1e-6)


def test_a_sigmoid_archive_is_measured_with_its_sigmoid(tmp_path, photo):
    from conftest import TinyCNN, class_names

    from mar_builder.model.export import export_predictor
    from mar_builder.model.predictor import Predictor

    torch.manual_seed(0)
    path = tmp_path / "multi.pt"
    export_predictor(Predictor(TinyCNN(4), class_names(4), DEFAULT_RECIPE, head="sigmoid"), path)
    pt, settings = load_pt(path)
    assert settings.head == "sigmoid" and settings.recipe == DEFAULT_RECIPE
    _, image = read_photo(photo)
    reference = DEFAULT_RECIPE.pil_reference()
    torch.testing.assert_close(
        InProcessModels(pt, settings, None).eager(image), torch.sigmoid(pt.model(reference(image).unsqueeze(0)))[0]
    )
