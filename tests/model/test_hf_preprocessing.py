"""hf_preprocessing.py: each processor family's preprocessor_config.json -> a Recipe whose scripted preprocess gives
what the folder's own processor (AutoImageProcessor) gives on real photos."""

import json
import logging

import numpy as np
import pytest
import torch
from conftest import TinyCNN, class_names
from hf_folders import (
    BEIT_PROCESSOR,
    CONVNEXT_384_PROCESSOR,
    CONVNEXT_PROCESSOR,
    CONVNEXT_PROCESSOR_SAVED,
    DEIT_PROCESSOR,
    DINOV2_PROCESSOR,
    MOBILEVIT_PROCESSOR,
    SWIN_PROCESSOR,
    VIT_PROCESSOR,
    hf_reference,
    write_processor_config,
)
from image_variants import SAMPLES
from PIL import Image

from mar_builder.errors import ModelSourceError
from mar_builder.model.export import script_predictor
from mar_builder.model.hf_folder import load_processor
from mar_builder.model.hf_preprocessing import recipe_from_processor
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")  # 451x300, 600x400, 640x427: odd margins included
MEAN_TOLERANCE = 0.005  # the bound on the mean |difference| after normalisation
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# Each hub file and the Recipe its processor's own arithmetic comes to.
EXPECTED = {
    "vit": (VIT_PROCESSOR, Recipe(resize=(224, 224), crop=None, mean=(0.5,) * 3, std=(0.5,) * 3)),
    "convnext": (
        CONVNEXT_PROCESSOR,  # int(224 / 0.875) = 256, then the centre 224
        Recipe(resize=(256,), interpolation="bicubic", crop=(224, 224), **IMAGENET),
    ),
    "convnext-saved": (
        CONVNEXT_PROCESSOR_SAVED,
        Recipe(resize=(256,), interpolation="bicubic", crop=(224, 224), **IMAGENET),
    ),
    "convnext-384": (CONVNEXT_384_PROCESSOR, Recipe(resize=(384, 384), interpolation="bicubic", crop=None, **IMAGENET)),
    "deit": (DEIT_PROCESSOR, Recipe(resize=(256, 256), interpolation="bicubic", crop=(224, 224), **IMAGENET)),
    "mobilevit": (
        MOBILEVIT_PROCESSOR,
        Recipe(resize=(288,), crop=(256, 256), channel_order="BGR", mean=None, std=None),
    ),
    # Families whose processors are shared: BEiT's, BiT's (DINOv2) and ViT's (Swin).
    "beit": (BEIT_PROCESSOR, Recipe(resize=(224, 224), crop=None, mean=(0.5,) * 3, std=(0.5,) * 3)),
    "dinov2": (DINOV2_PROCESSOR, Recipe(resize=(256,), interpolation="bicubic", crop=(224, 224), **IMAGENET)),
    "swin": (SWIN_PROCESSOR, Recipe(resize=(224, 224), interpolation="bicubic", crop=None, **IMAGENET)),
}


def processor_folder(tmp_path, config):
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_processor_config(tmp_path, config)
    return tmp_path


def compiled(tmp_path, config) -> Recipe:
    return recipe_from_processor(load_processor(processor_folder(tmp_path, config)))


@pytest.mark.parametrize("family", EXPECTED)
def test_each_family_compiles_to_its_processors_recipe(tmp_path, family):
    config, expected = EXPECTED[family]
    recipe = compiled(tmp_path, config)
    assert recipe.crop_rounding == "floor"  # int((H - h) / 2), as transformers crops
    assert recipe == Recipe(**{**expected.as_dict(), "crop_rounding": "floor"})


@pytest.mark.parametrize("family", EXPECTED)
@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_preprocess_equals_the_folders_own_processor_on_photos(tmp_path, family, backend):
    """torchvision is transformers' default backend (what AutoImageProcessor gives); pil is its other one."""
    folder = processor_folder(tmp_path, EXPECTED[family][0])
    recipe = recipe_from_processor(load_processor(folder))
    pt = script_predictor(Predictor(TinyCNN(4), class_names(4), recipe))
    reference = hf_reference(folder, backend)
    for photo in PHOTOS:
        image = Image.open(SAMPLES / photo).convert("RGB")
        got = pt.preprocess(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        expected = torch.as_tensor(np.asarray(reference(image)))
        assert got.shape == expected.shape == recipe.output_size
        difference = (got - expected).abs().mean().item()
        assert difference <= MEAN_TOLERANCE, f"{photo}: mean |diff| {difference:.4g}"
        if backend == "torchvision":  # the same kernels: equal but for float rounding
            assert difference < 1e-6, f"{photo}: mean |diff| {difference:.4g}"


def test_a_processor_saved_by_transformers_compiles_as_the_hub_file_it_came_from(tmp_path):
    """save_pretrained writes today's form (dict sizes, image_processor_type): the same recipe."""
    processor = load_processor(processor_folder(tmp_path / "hub", DEIT_PROCESSOR))
    processor.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": 256, "width": 256} and "image_processor_type" in saved
    assert recipe_from_processor(load_processor(tmp_path / "saved")) == recipe_from_processor(processor)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"resample": 1}, r"resample 1 \(LANCZOS\)"),
        ({"resample": 4}, r"resample 4 \(BOX\)"),
        ({"do_pad": True, "pad_size": {"height": 300, "width": 300}}, r"do_pad \(True\)"),
        ({"size": {"shortest_edge": 224, "longest_edge": 400}}, r"size\.longest_edge"),
        ({"size": {"max_height": 224, "max_width": 224}}, r"size\.max_height, size\.max_width"),
    ],
)
def test_a_key_the_predictor_cannot_honour_is_refused_by_name(tmp_path, change, message):
    with pytest.raises(ModelSourceError, match=message):
        compiled(tmp_path, {**VIT_PROCESSOR, **change})


def test_convnext_refuses_a_second_crop_it_cannot_merge(tmp_path):
    config = {**CONVNEXT_PROCESSOR, "do_center_crop": True, "crop_size": 200}
    with pytest.raises(ModelSourceError, match=r"two centre crops"):
        compiled(tmp_path, config)
    # The same crop again is no second crop.
    assert compiled(tmp_path, {**config, "crop_size": 224}).crop == (224, 224)


def test_a_processor_not_compiled_here_is_refused_by_name(tmp_path):
    config = {"image_processor_type": "EfficientNetImageProcessor", "size": {"height": 289, "width": 289}}
    with pytest.raises(ModelSourceError, match=r"EfficientNetImageProcessor is not a processor this tool compiles"):
        compiled(tmp_path, config)


def test_a_key_the_processor_ignores_is_ignored_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        recipe = compiled(tmp_path, {**VIT_PROCESSOR, "crop_pct": 0.9})
    assert recipe.resize == (224, 224) and recipe.crop is None  # as ViTImageProcessor, which has no crop_pct
    assert "ViTImageProcessor does not use crop_pct" in caplog.text


def test_without_rescale_or_normalize_the_network_sees_what_the_processor_gives(tmp_path):
    recipe = compiled(tmp_path, {**VIT_PROCESSOR, "do_rescale": False, "do_normalize": False, "resample": 0})
    assert (recipe.rescale, recipe.mean, recipe.std, recipe.interpolation) == (1.0, None, None, "nearest-exact")
