from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from conftest import TinyCNN, class_names
from PIL import Image
from torch import nn

from mar_builder.errors import RecipeError
from mar_builder.model.default_model import DEFAULT_RECIPE
from mar_builder.model.export import script_predictor
from mar_builder.model.predictor import Predictor, RecipeTransform
from mar_builder.model.recipe import Recipe

# Every value of the Recipe, saved on the .pt under the same name (as lists where the Recipe has tuples).
RECIPE_ATTRIBUTES = (
    "resize",
    "max_size",
    "interpolation",
    "antialias",
    "crop",
    "crop_rounding",
    "grayscale",
    "grayscale_first",
    "channel_order",
    "rescale",
    "mean",
    "std",
)


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


@pytest.mark.parametrize(
    "recipe",
    [
        DEFAULT_RECIPE,
        Recipe(resize=(320,), max_size=400, interpolation="bicubic", crop=(300, 280), channel_order="BGR"),
        Recipe(resize=(96, 128), crop=None, grayscale=1, mean=(0.5,), std=(0.25,), antialias=False),
        Recipe(resize=(), crop=(64, 64), grayscale=3, grayscale_first=True, mean=None, std=None, rescale=1.0),
        Recipe(resize=(251,), interpolation="bicubic", crop=(224, 224), crop_rounding="floor"),
    ],
)
def test_save_load_round_trip_keeps_outputs_and_every_recipe_value(tmp_path, recipe):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(recipe.channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    eager = Predictor(network, class_names(5), recipe)
    path = tmp_path / "p.pt"
    script_predictor(eager).save(str(path))
    reloaded = torch.jit.load(str(path))
    assert list(reloaded.class_names) == class_names(5) and reloaded.head == "softmax"
    for name in RECIPE_ATTRIBUTES:
        value = getattr(recipe, name)
        assert getattr(reloaded, name) == (list(value) if isinstance(value, tuple) else value), name
    assert list(reloaded.input_size) == list(recipe.output_size)
    x = torch.randint(0, 256, (1, 3, 256, 320), dtype=torch.uint8)
    torch.testing.assert_close(reloaded(x), eager(x))
    assert reloaded.preprocess(x[0]).shape == recipe.output_size


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
    torch.testing.assert_close(predictor.preprocess(as_float), reference(as_float), atol=1e-6, rtol=0)
    # uint8 is resized as uint8: within one grey level of T.Resize, which is 2/255 after Normalize(0.5, 0.5).
    torch.testing.assert_close(predictor.preprocess(image), reference(image), atol=2 / 255 + 1e-6, rtol=0)


def pil_resized(image: torch.Tensor, size, interpolation: str) -> torch.Tensor:
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    return torch.from_numpy(np.asarray(pil.resize((size[1], size[0]), resample)).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "nearest-exact"])
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("shape", [(3, 300, 451), (3, 451, 300), (3, 31, 45)])
def test_uint8_resize_matches_its_reference_within_a_grey_level(interpolation, antialias, shape):
    """Shorter side with max_size, and a squash, on CHW and HWC-strided images, eager and scripted. Antialiased
    bilinear and bicubic are PIL's resampling (torch's uint8 kernels follow PIL, torchvision's float bicubic
    overshoots on noise); the others are torchvision's own tensor arithmetic."""
    image = torch.randint(0, 256, shape, dtype=torch.uint8)
    hwc_view = image.movedim(-3, -1).contiguous().movedim(-1, -3)  # how decoded images are laid out
    mode = T.InterpolationMode(interpolation)
    for size, max_size in (((256,), 300), ((90, 70), None)):
        crop = None if len(size) == 2 else (8, 8)
        recipe = Recipe(resize=size, max_size=max_size, interpolation=interpolation, antialias=antialias, crop=crop)
        reference = T.Resize(list(size), interpolation=mode, max_size=max_size, antialias=antialias)
        expected = reference(image)
        if antialias and interpolation in ("bilinear", "bicubic"):
            expected = pil_resized(image, expected.shape[-2:], interpolation)
        transform = RecipeTransform(recipe)
        for resize in (transform._resize, torch.jit.script(transform)._resize):
            for x in (image, hwc_view):
                got = resize(x.unsqueeze(0))[0]
                assert got.dtype == torch.uint8 and got.shape == expected.shape
                # Bicubic enlarging pure noise (31x45 to 256 pixels) reaches two grey levels off PIL.
                assert (got.int() - expected.int()).abs().max() <= (2 if interpolation == "bicubic" else 1)
        as_float = image.float().unsqueeze(0) / 255
        torch.testing.assert_close(transform._resize(as_float), reference(as_float))


def photo_pixels(height: int = 180, width: int = 260) -> Image.Image:
    """A smooth photo-like RGB image (random noise is the worst case for resizing, not a photo)."""
    y, x = torch.meshgrid(torch.linspace(0, 6, height), torch.linspace(0, 9, width), indexing="ij")
    channels = [torch.sin(x + y), torch.cos(x * 0.7 - y), torch.sin(x * 0.3) * torch.cos(y * 1.3)]
    pixels = ((torch.stack(channels, dim=-1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.mark.parametrize(
    "recipe",
    [
        Recipe(resize=(128,), crop=(112, 112)),
        Recipe(resize=(150,), max_size=200, interpolation="bicubic", crop=(140, 100)),
        Recipe(resize=(100, 120), crop=None, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3),
        Recipe(resize=(100,), crop=(96, 96), grayscale=1, mean=(0.5,), std=(0.5,)),
        Recipe(resize=(100,), crop=(96, 96), grayscale=3, grayscale_first=True),
        Recipe(resize=(100,), crop=(96, 96), channel_order="BGR", rescale=1.0, mean=(104.0, 117.0, 123.0), std=(1.0,)),
        Recipe(resize=(100,), crop=(120, 96), interpolation="nearest-exact", mean=None, std=None),
        Recipe(resize=(), crop=(200, 300)),
        Recipe(resize=(101,), crop=(96, 96), crop_rounding="floor"),  # margins of 5 and more: round and floor differ
        Recipe(resize=(), crop=(203, 290), crop_rounding="floor"),  # padded on one side, cropped on the other
    ],
)
def test_preprocess_matches_the_recipe_on_pil_images(recipe):
    """The .pt's uint8 path against the same recipe as torchvision transforms on a PIL image (training's path)."""
    image = photo_pixels()
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    expected = recipe.pil_reference()(image)
    got = script_predictor(Predictor(TinyCNNFor(recipe), class_names(5), recipe)).preprocess(tensor)
    assert got.shape == expected.shape == recipe.output_size
    scale = recipe.rescale / min(recipe.std or (1.0,))  # one grey level after rescale and normalize
    assert (got - expected).abs().max() <= 1.01 * scale
    assert (got - expected).abs().mean() <= 0.1 * scale


def TinyCNNFor(recipe: Recipe) -> nn.Module:
    return nn.Sequential(nn.Conv2d(recipe.channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


@pytest.mark.parametrize("size", [(300, 451), (231, 229), (224, 224), (200, 260), (225, 100)])
def test_floored_crop_offsets_follow_hugging_face_processors(size):
    """crop_rounding "floor": transformers' TorchvisionBackend.center_crop (int((H - h) / 2), its zero padding)."""
    from transformers.image_processing_backends import TorchvisionBackend
    from transformers.image_utils import SizeDict

    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    recipe = Recipe(resize=(), crop=(224, 224), crop_rounding="floor", mean=None, std=None, rescale=1.0)
    got = script_predictor(Predictor(TinyCNNFor(recipe), class_names(5), recipe)).preprocess(image)
    expected = TorchvisionBackend().center_crop(image, SizeDict(height=224, width=224)).float()
    assert torch.equal(got, expected)
    rounded = Predictor(TinyCNNFor(recipe), class_names(5), replace(recipe, crop_rounding="round")).preprocess(image)
    if any((s - 224) % 4 == 3 for s in size):  # an odd margin whose half rounds up: torchvision's crop moves
        assert not torch.equal(rounded, expected)


def test_grayscale_follows_pil_exactly_on_uint8():
    image = photo_pixels(40, 50)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    grey = RecipeTransform(Recipe(resize=(), crop=(40, 50), grayscale=1, mean=None, std=None))._to_grayscale(
        tensor.unsqueeze(0)
    )
    assert torch.equal(grey[0, 0], torch.from_numpy(np.asarray(image.convert("L")).copy()))


def test_custom_sizes_and_normalization_are_used(tiny_predictor):
    recipe = Recipe(resize=(160,), crop=(128, 128))
    out = script_predictor(tiny_predictor(recipe=recipe)).preprocess(torch.full((3, 200, 300), 255, dtype=torch.uint8))
    assert out.shape == (3, 128, 128)
    torch.testing.assert_close(
        out[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )


def test_preprocess_rejects_images_without_three_channels(tiny_predictor):
    scripted = script_predictor(tiny_predictor())
    with pytest.raises(torch.jit.Error, match=r"expected one image shaped \(3, H, W\)"):
        scripted.preprocess(torch.zeros(1, 32, 32, dtype=torch.uint8))


class OneLogit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) * 3.0


def test_sigmoid_head_gives_each_class_its_own_probability(tmp_path):
    torch.manual_seed(0)
    network = TinyCNN(4)
    scripted = script_predictor(Predictor(network, class_names(4), DEFAULT_RECIPE, head="sigmoid"))
    x = torch.randint(0, 256, (2, 3, 240, 300), dtype=torch.uint8)
    logits = network(RecipeTransform(DEFAULT_RECIPE)(x))
    torch.testing.assert_close(scripted(x), torch.sigmoid(logits))
    assert scripted.head == "sigmoid"


def test_one_logit_is_never_softmaxed():
    x = torch.randint(0, 256, (3, 3, 240, 300), dtype=torch.uint8)
    x[0] = 255  # a confident positive after Normalize(0.5, 0.5): mean 1, logit 3
    logit = OneLogit()(RecipeTransform(DEFAULT_RECIPE)(x))
    one = script_predictor(Predictor(OneLogit(), ["defect"], DEFAULT_RECIPE, head="sigmoid"))
    torch.testing.assert_close(one(x), torch.sigmoid(logit))
    assert float(one(x)[0, 0]) == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), abs=1e-4)
    pair = script_predictor(Predictor(OneLogit(), ["ok", "defect"], DEFAULT_RECIPE, head="sigmoid"))
    torch.testing.assert_close(pair(x), torch.cat([1 - torch.sigmoid(logit), torch.sigmoid(logit)], dim=1))
    assert pair.one_logit_pair and not one.one_logit_pair


@pytest.mark.parametrize(
    "network, names, head, message",
    [
        (OneLogit(), 1, "softmax", r"one output: a softmax over one value is always 1; use head sigmoid"),
        (OneLogit(), 2, "softmax", r"one output: a softmax over one value is always 1"),
        (OneLogit(), 3, "sigmoid", r"the model outputs 1 classes but 3 class names were given"),
        (TinyCNN(4), 5, "sigmoid", r"the model outputs 4 classes but 5 class names were given"),
        (TinyCNN(4), 4, "argmax", r"head 'argmax': expected softmax or sigmoid"),
    ],
)
def test_heads_that_do_not_fit_are_refused(network, names, head, message):
    with pytest.raises(RecipeError, match=message):
        Predictor(network, class_names(names), DEFAULT_RECIPE, head=head)
