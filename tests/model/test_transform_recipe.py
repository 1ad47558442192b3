"""The user's eval transforms compiled into Recipes, checked on the photos samples/ carries (the PIL path)."""

import pytest
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.v2 as v2

from mar_builder.errors import RecipeError
from mar_builder.model.recipe import Recipe
from mar_builder.model.recipe_sources import resolve_recipe, timm_recipe, torchvision_recipe
from mar_builder.model.transform_check import MEAN_LEVELS, check_photos, compare_on_photos
from mar_builder.model.transform_recipe import compile_transform

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The tutorial's testval_transforms (/work/shared/seed), as its first snippet writes them.
TESTVAL_TRANSFORMS = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
# The noise of torch's uint8 resize against PIL's, measured at a mean |difference| of 0.0013 after normalisation.
UINT8_VS_PIL_NOISE = 0.0013


def assert_matches_on_photos(transform, recipe: Recipe) -> None:
    """The Predictor's steps on the decoded uint8 pixels against `transform` on the PIL image, on real photos."""
    result = compare_on_photos(transform, recipe, check_photos(None))
    assert result.photos >= 3
    assert result.mean <= UINT8_VS_PIL_NOISE and result.mean <= MEAN_LEVELS * result.grey_level
    assert result.largest <= 4 * result.grey_level


def test_the_tutorials_testval_transforms():
    recipe = compile_transform(TESTVAL_TRANSFORMS)
    assert recipe == Recipe(resize=(256,), crop=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert_matches_on_photos(TESTVAL_TRANSFORMS, recipe)


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet50", Recipe(resize=(232,), crop=(224, 224))),
        ("efficientnet_b3", Recipe(resize=(320,), crop=(300, 300), interpolation="bicubic")),
        ("inception_v3", Recipe(resize=(342,), crop=(299, 299))),
    ],
)
def test_torchvision_weights_recipes_are_read_from_their_presets(arch, expected):
    recipe = torchvision_recipe(arch)
    assert recipe == expected
    preset = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    assert_matches_on_photos(preset, recipe)


def test_a_v2_bicubic_squash():
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((200, 240), interpolation=v2.InterpolationMode.BICUBIC),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(*IMAGENET),
        ]
    )
    recipe = compile_transform(transform)
    assert recipe == Recipe(resize=(200, 240), crop=None, interpolation="bicubic")
    assert_matches_on_photos(transform, recipe)
    # The same on PIL images (no ToImage first): PIL's bicubic.
    pil_first = v2.Compose([v2.Resize((200, 240), interpolation=v2.InterpolationMode.BICUBIC), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(*IMAGENET)])  # fmt: skip
    assert_matches_on_photos(pil_first, compile_transform(pil_first))


@pytest.mark.parametrize("grayscale_first", [True, False])
def test_a_one_channel_grayscale_network_fed_rgb(grayscale_first):
    steps = [T.Resize(160), T.CenterCrop(144)]
    steps.insert(0 if grayscale_first else 2, T.Grayscale(1))
    transform = T.Compose(steps + [T.ToTensor(), T.Normalize([0.5], [0.25])])
    recipe = compile_transform(transform)
    assert (recipe.grayscale, recipe.grayscale_first, recipe.output_size) == (1, grayscale_first, (1, 144, 144))
    assert_matches_on_photos(transform, recipe)


def test_a_timm_bicubic_network_takes_its_pretrained_cfg_in_full():
    timm = pytest.importorskip("timm")
    network = timm.create_model("resnet18", pretrained=False, num_classes=3)
    recipe = timm_recipe(network)
    # timm's resnet18.a1_in1k: bicubic, crop_pct 0.95: resize floor(224 / 0.95) = 235.
    assert recipe == Recipe(resize=(235,), crop=(224, 224), interpolation="bicubic")
    config = timm.data.resolve_data_config({}, model=network)
    assert_matches_on_photos(timm.data.create_transform(**config), recipe)
    squash = timm.data.create_transform(input_size=(3, 192, 256), crop_pct=1.0, crop_mode="squash")
    assert compile_transform(squash).resize == (192, 256)
    assert_matches_on_photos(squash, compile_transform(squash))


def test_nn_sequential_and_nearest_on_pil():
    transform = torch.nn.Sequential(T.Resize(100, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(96))
    recipe = compile_transform(T.Compose([transform, T.PILToTensor(), T.ConvertImageDtype(torch.float32)]))
    # PIL's NEAREST picks the pixels of torch's nearest-exact.
    assert (recipe.interpolation, recipe.mean, recipe.rescale) == ("nearest-exact", None, pytest.approx(1 / 255))


@pytest.mark.parametrize(
    "transform, message",
    [
        (T.Compose([T.RandomResizedCrop(224), T.ToTensor()]), r"RandomResizedCrop is a random augmentation"),
        (v2.Compose([v2.Resize(256), v2.RandomHorizontalFlip(), v2.CenterCrop(224)]), r"RandomHorizontalFlip is a"),
        (T.Compose([T.Resize(256), T.CenterCrop(224), T.Lambda(lambda x: x), T.ToTensor()]), r"Lambda runs code"),
        (T.Compose([T.Resize(256), T.CenterCrop(224), T.ColorJitter(0.1), T.ToTensor()]), r"ColorJitter"),
        (T.Compose([T.Resize(256), T.ToTensor()]), r"gives each image its own size .* add a CenterCrop"),
        (T.Compose([T.Resize(256), T.CenterCrop(224)]), r"never turns the image into a tensor"),
        (T.Compose([T.CenterCrop(224), T.Resize(256), T.ToTensor()]), r"Resize after CenterCrop"),
        (T.Compose([T.Resize(256, interpolation=T.InterpolationMode.LANCZOS), T.CenterCrop(2)]), r"lanczos"),
        ("resize 256", r"builtins.str has no exact equivalent"),
    ],
)
def test_steps_without_an_exact_equivalent_are_refused_by_name(transform, message):
    with pytest.raises(RecipeError, match=message):
        compile_transform(transform)


def test_a_flag_that_contradicts_the_transform_is_refused():
    given = Recipe(resize=(232,), crop=(224, 224))
    with pytest.raises(RecipeError, match=r"--transforms contradicts --resize \(232 against the transform's 256\)"):
        resolve_recipe(given, ("resize",), torch.nn.Identity(), transforms=TESTVAL_TRANSFORMS)
    agreeing = Recipe(resize=(256,), crop=(224, 224))
    assert resolve_recipe(agreeing, ("resize",), torch.nn.Identity(), transforms=TESTVAL_TRANSFORMS).mean == (0.5,) * 3


def test_flags_replace_values_of_the_weights_recipe(caplog):
    caplog.set_level("INFO")
    recipe = resolve_recipe(Recipe(resize=(300,), crop=(224, 224)), ("resize",), torch.nn.Identity(), "resnet50")
    assert (recipe.resize, recipe.crop, recipe.interpolation) == ((300,), (224, 224), "bilinear")
    assert "resize: flag, crop: torchvision's resnet50 weights" in caplog.text
    opted_out = Recipe(resize=(128,), crop=(112, 112))
    assert resolve_recipe(opted_out, (), torch.nn.Identity(), "resnet50", weights_recipe=False) == opted_out
