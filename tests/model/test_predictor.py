import pytest
import torch
import torchvision.transforms as T
from conftest import TinyCNN, class_names

from mar_builder.model.export import script_predictor
from mar_builder.model.predictor import Predictor, UInt8Resize


def test_scripted_matches_eager_on_uint8_and_float_batches(tiny_predictor):
    eager = tiny_predictor()
    scripted = script_predictor(eager)
    uint8 = torch.randint(0, 256, (2, 3, 300, 400), dtype=torch.uint8)
    torch.testing.assert_close(scripted(uint8), eager(uint8))
    as_float = uint8.float() / 255  # what the tutorial's ToTensor() gives
    torch.testing.assert_close(scripted(as_float), eager(as_float))


def test_output_is_a_probability_distribution(tiny_predictor):
    probabilities = tiny_predictor(num_classes=7)(torch.randint(0, 256, (3, 3, 50, 80), dtype=torch.uint8))
    assert probabilities.shape == (3, 7)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))
    assert probabilities.requires_grad is False


def test_save_load_round_trip_keeps_outputs_and_class_names(tiny_predictor, tmp_path):
    eager = tiny_predictor()
    path = tmp_path / "p.pt"
    script_predictor(eager).save(str(path))
    reloaded = torch.jit.load(str(path))
    assert list(reloaded.class_names) == class_names(5)
    assert reloaded.resize_size == 256 and reloaded.crop_size == 224
    x = torch.randint(0, 256, (1, 3, 256, 320), dtype=torch.uint8)
    torch.testing.assert_close(reloaded(x), eager(x))


def test_preprocess_then_classify_equals_forward_for_mixed_sizes(tiny_predictor):
    scripted = script_predictor(tiny_predictor())
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in [(300, 400), (500, 260), (8, 6)]]
    batch = torch.stack([scripted.preprocess(image) for image in images])
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    expected = torch.cat([scripted(image.unsqueeze(0)) for image in images])
    torch.testing.assert_close(scripted.classify(batch), expected)


def test_preprocess_matches_the_tutorials_transform_pipeline(tiny_predictor):
    """Resize 256, CenterCrop 224, [0, 1] floats, Normalize((0.5,)*3, (0.5,)*3), as the seed."""
    image = torch.randint(0, 256, (3, 240, 320), dtype=torch.uint8)
    reference = T.Compose(
        [
            T.Resize(256),
            T.CenterCrop(224),
            T.ConvertImageDtype(torch.float),
            T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    predictor = tiny_predictor()
    # The tutorial's ToTensor() floats take exactly T.Resize's path.
    as_float = image.float() / 255
    torch.testing.assert_close(predictor.preprocess(as_float), reference(as_float), atol=0, rtol=0)
    # uint8 is resized as uint8: within one grey level of T.Resize, which is 2/255 after Normalize(0.5, 0.5).
    torch.testing.assert_close(predictor.preprocess(image), reference(image), atol=2 / 255 + 1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(3, 300, 451), (3, 451, 300), (3, 31, 45), (2, 3, 100, 80)])
def test_uint8_resize_matches_torchvision_within_one_grey_level(shape):
    image = torch.randint(0, 256, shape, dtype=torch.uint8)
    hwc_view = image.movedim(-3, -1).contiguous().movedim(-1, -3)  # how decoded images are laid out
    expected = T.Resize([256])(image)
    for resize in (UInt8Resize([256]), torch.jit.script(UInt8Resize([256]))):
        for x in (image, hwc_view):
            got = resize(x)
            assert got.dtype == torch.uint8 and got.shape == expected.shape
            assert (got.int() - expected.int()).abs().max() <= 1
    as_float = image.float() / 255
    assert torch.equal(UInt8Resize([256])(as_float), T.Resize([256])(as_float))


def test_custom_sizes_and_normalization_are_used(tiny_predictor):
    predictor = tiny_predictor(resize_size=160, crop_size=128, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    out = script_predictor(predictor).preprocess(torch.full((3, 200, 300), 255, dtype=torch.uint8))
    assert out.shape == (3, 128, 128)
    torch.testing.assert_close(
        out[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )


def test_preprocess_rejects_images_without_three_channels(tiny_predictor):
    scripted = script_predictor(tiny_predictor())
    with pytest.raises(torch.jit.Error, match=r"expected one image shaped \(3, H, W\)"):
        scripted.preprocess(torch.zeros(1, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mean": (0.5, 0.5)}, "mean and std need 3 values each, got 2 and 3"),
        ({"std": (0.5, 0.0, 0.5)}, "std values must be positive"),
        ({"resize_size": 200, "crop_size": 224}, "crop size 224 is larger than resize size 200"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Predictor(TinyCNN(), class_names(5), **kwargs)
