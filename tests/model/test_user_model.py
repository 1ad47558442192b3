from pathlib import Path
from typing import Tuple

import pytest
import torch
import torchvision
from conftest import TinyCNN, class_names
from torch import nn

from mar_builder.errors import CheckpointError, ClassNamesError, ExportError, ModelSourceError, SettingsError
from mar_builder.model.model_sources import build_from_model_file
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe
from mar_builder.model.user_model import UserModel, build_predictor, check_network_output, recipe_from_flags

NET_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))
"""


def test_preprocessing_flags_default_to_imagenet_normalization():
    assert recipe_from_flags() == Recipe(
        resize=(256,), crop=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    assert recipe_from_flags(" 0.5, 0.5,0.5", "1,1,1", 160, 128) == Recipe(
        resize=(160,), crop=(128, 128), mean=(0.5,) * 3, std=(1.0,) * 3
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"mean": "0.5,0.5"}, r"--mean needs 3 values \(R,G,B\), got 2: 0\.5,0\.5"),
        ({"std": "0.2,0.2,0.2,0.2"}, r"--std needs 3 values \(R,G,B\), got 4"),
        ({"std": "0.2,0,0.2"}, r"--std values must be positive, got 0\.2,0,0\.2"),
        ({"std": "0.2,-0.1,0.2"}, r"--std values must be positive"),
        ({"mean": "a,b,c"}, r"--mean 'a,b,c': expected 3 comma-separated numbers"),
        ({"mean": "0.5,nan,0.5"}, r"--mean values must be finite numbers"),
        ({"resize": 200, "crop": 224}, r"--crop 224 is larger than --resize 200: the centre crop must fit"),
        ({"resize": 64, "crop": 0}, r"--crop must be at least 1, got 0"),
    ],
)
def test_bad_preprocessing_flags_are_refused(flags, message):
    with pytest.raises(SettingsError, match=message):
        recipe_from_flags(**flags)


@pytest.mark.parametrize(
    "flags, arch, message",
    [
        ({"crop": 384}, None, r"--crop 384 is larger than --resize 256; you gave --crop only, so pass --resize too"),
        ({"resize": 128}, None, r"--crop 224 is larger than --resize 128; you gave --resize only, so pass --crop too"),
        ({"resize": 200}, "resnet18", r"--crop 224 .* --resize 200; .* pass --crop too .*resnet18 weights recipe\)"),
    ],
)
def test_one_size_flag_that_does_not_fit_the_recipes_other_size_is_refused(flags, arch, message):
    from mar_builder.model.recipe_sources import resolve_recipe

    with pytest.raises(SettingsError, match=message):
        resolve_recipe(recipe_from_flags(**flags), tuple(flags), TinyCNN(), arch=arch)


def test_one_size_flag_that_fits_the_transforms_own_recipe_is_accepted():
    import torchvision.transforms as T

    from mar_builder.model.recipe_sources import resolve_recipe

    transform = T.Compose([T.Resize(160), T.CenterCrop(128), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    recipe = resolve_recipe(recipe_from_flags(resize=160), ("resize",), TinyCNN(), transforms=transform)
    assert recipe.resize == (160,) and recipe.crop == (128, 128)


@pytest.mark.parametrize(
    "fields, error, message",
    [
        (
            {"arch": "resnet18", "model_file": "net.py:Net"},
            SettingsError,
            r"--arch and --model-file exclude each other",
        ),
        ({"arch": "resnet18", "model_kwargs": {"a": 1}}, SettingsError, r"--model-kwargs is for --model-file"),
        ({"arch": "resnet18", "weights": None}, SettingsError, r"--arch needs --weights CKPT; without it .*random"),
        ({"model_file": "n.py:N", "weights": None}, SettingsError, r"--model-file needs --weights CKPT"),
        ({}, SettingsError, r"say which network: --arch NAME or --model-file FILE.py:NAME, with --weights CKPT"),
        ({"arch": "resnet18", "class_names": ()}, ClassNamesError, r"the class list holds no class names"),
        ({"arch": "resnet18", "class_names": ("a", "a")}, ClassNamesError, r"duplicated class names: 'a'"),
    ],
)
def test_user_model_refuses_incomplete_descriptions(fields, error, message):
    values = {"class_names": ("a", "b"), "weights": Path("w.pt"), **fields}
    with pytest.raises(error, match=message):
        UserModel(**values)


def write_net(directory: Path) -> Path:
    path = directory / "net.py"
    path.write_text(NET_PY)
    return path


def save_state_dict(network: nn.Module, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in network.state_dict().items()}, path)
    return path


def random_images() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 150, 200), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def test_arch_with_weights_gives_the_eager_model_with_its_preprocessing(tmp_path):
    torch.manual_seed(0)
    trained = torchvision.models.squeezenet1_1(num_classes=3).eval()
    weights = save_state_dict(trained, tmp_path / "w.pt")
    recipe = Recipe(resize=(128,), crop=(112, 112), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    model = UserModel(("a", "b", "c"), weights, arch="squeezenet1_1", recipe=recipe)
    predictor = build_predictor(model)
    images = random_images()
    reference = Predictor(trained, ["a", "b", "c"], recipe)
    torch.testing.assert_close(predictor(images), reference(images))
    assert predictor.class_names == ["a", "b", "c"] and predictor.input_size == [3, 112, 112]


def test_half_precision_checkpoints_become_a_float32_network(tmp_path):
    source = f"{write_net(tmp_path)}:Net"
    torch.manual_seed(0)
    trained = build_from_model_file(source, {"num_classes": 5})
    weights = save_state_dict(trained, tmp_path / "w.pt", torch.float16)
    model = UserModel(tuple(class_names(5)), weights, model_file=source, model_kwargs={"num_classes": 5})
    network = build_predictor(model).model
    assert all(p.dtype == torch.float32 for p in network.parameters())
    torch.testing.assert_close(network.head.weight, trained.head.weight, atol=1e-3, rtol=1e-3)


def test_a_whole_pickled_model_needs_no_arch_with_allow_pickle(tmp_path):
    torch.manual_seed(0)
    trained = TinyCNN(5)
    torch.save(trained, tmp_path / "whole.pt")
    predictor = build_predictor(UserModel(tuple(class_names(5)), tmp_path / "whole.pt", allow_pickle=True))
    assert predictor.model is not trained and isinstance(predictor.model, TinyCNN)
    images = random_images()
    torch.testing.assert_close(predictor(images), Predictor(trained, class_names(5), predictor.recipe)(images))


def test_a_state_dict_without_a_network_is_refused(tmp_path):
    weights = save_state_dict(TinyCNN(5), tmp_path / "w.pt")
    with pytest.raises(SettingsError, match=r"w.pt holds a state_dict: say which network it belongs to with --arch"):
        build_predictor(UserModel(tuple(class_names(5)), weights, allow_pickle=True))


def test_model_file_whose_output_width_differs_from_the_class_count_gives_both_numbers(tmp_path):
    source = f"{write_net(tmp_path)}:Net"
    weights = save_state_dict(build_from_model_file(source, {"num_classes": 5}), tmp_path / "w.pt")
    model = UserModel(tuple(class_names(4)), weights, model_file=source, model_kwargs={"num_classes": 5})
    with pytest.raises(ModelSourceError, match=r"^the model outputs 5 classes but 4 class names were given$"):
        build_predictor(model)


def test_arch_checkpoint_with_another_class_count_gives_both_numbers(tmp_path):
    weights = save_state_dict(torchvision.models.squeezenet1_1(num_classes=3), tmp_path / "w.pt")
    model = UserModel(tuple(class_names(4)), weights, arch="squeezenet1_1")
    with pytest.raises(
        CheckpointError,
        match=r"w.pt has 3 classes \(classifier.1.weight is \[3, 512, 1, 1\] in the checkpoint\) "
        r"but 4 class names were given",
    ):
        build_predictor(model)


class TupleOut(TinyCNN):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = super().forward(x)
        return logits, logits


class Softmaxed(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(dim=1)


class FixedSize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(
    "network, names, message",
    [
        (TinyCNN(5), 4, r"^the model outputs 5 classes but 4 class names were given$"),
        (TinyCNN(3), 7, r"^the model outputs 3 classes but 7 class names were given$"),
        (TupleOut(5), 5, r"the network returns a tuple, not one tensor of logits"),
        (Softmaxed(5), 5, r"the network already outputs probabilities .* returning logits"),
        (FixedSize(), 5, r"the network fails on a 2x3x224x224 batch \(the recipe's output size\): RuntimeError: mat1"),
        (nn.Flatten(0), 5, r"the network returns shape \[301056\] for 2 images; expected \[2, 5\]"),
    ],
)
def test_network_output_must_be_one_logit_per_class(network, names, message):
    # A count that does not fit the head is refused as the Predictor is made (RecipeError), the rest by the check.
    with pytest.raises(ExportError, match=message):
        check_network_output(Predictor(network, class_names(names)))
