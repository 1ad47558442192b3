"""Your own classifier: the frozen description that the flags give, and the eager Predictor built from it."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..constants import DEFAULT_CROP_SIZE, DEFAULT_RESIZE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from ..errors import ModelSourceError, RecipeError, SettingsError, first_line
from .checkpoints import find_weights, load_checkpoint, load_weights
from .class_names import validate_class_names
from .model_sources import AUX_HEAD_PREFIXES, build_architecture, build_from_model_file
from .predictor import Predictor, check_head, count_outputs, default_head
from .recipe import Recipe
from .recipe_sources import resolve_recipe
from .transform_check import check_recipe

logger = logging.getLogger(__name__)

# The Recipe fields that the preprocessing flags set.
PREPROCESSING_FIELDS = ("mean", "std", "resize", "crop", "interpolation", "channel_order")
CHECK_BATCH = 2  # random images the network is run on once, before export, to check its output


def recipe_from_flags(
    mean: str | None = None,
    std: str | None = None,
    resize: int | None = None,
    crop: int | None = None,
    interpolation: str | None = None,
    channel_order: str | None = None,
) -> Recipe:
    """--mean, --std, --resize and --crop as a Recipe: resize the shorter side, bilinear antialiased, crop the
    centre square, ImageNet's mean and std; what is not given keeps its default (256, 224, ImageNet's)."""
    mean_values = IMAGENET_MEAN if mean is None else parse_channels("--mean", mean)
    std_values = IMAGENET_STD if std is None else parse_channels("--std", std)
    for flag, values in (("--mean", mean_values), ("--std", std_values)):
        if len(values) != 3:
            raise SettingsError(f"{flag} needs 3 values (R,G,B), got {len(values)}: {_listed(values)}")
        if not all(math.isfinite(v) for v in values):
            raise SettingsError(f"{flag} values must be finite numbers, got {_listed(values)}")
    if any(s <= 0 for s in std_values):
        raise SettingsError(f"--std values must be positive, got {_listed(std_values)}")
    resize_size = DEFAULT_RESIZE_SIZE if resize is None else resize
    crop_size = DEFAULT_CROP_SIZE if crop is None else crop
    for flag, value in (("--resize", resize_size), ("--crop", crop_size)):
        if value < 1:
            raise SettingsError(f"{flag} must be at least 1, got {value}")
    # With one of the two given, the other may come from the model's own recipe or --transforms: checked once
    # the recipe is resolved (recipe_sources.resolve_recipe).
    if crop_size > resize_size and resize is not None and crop is not None:
        raise SettingsError(
            f"--crop {crop_size} is larger than --resize {resize_size}: "
            "the centre crop must fit inside the resized image"
        )
    return Recipe(
        resize=(resize_size,),
        crop=(crop_size, crop_size),
        mean=mean_values,
        std=std_values,
        interpolation=interpolation or "bilinear",
        channel_order=channel_order or "RGB",
    )


@dataclass(frozen=True)
class UserModel:
    """A trained classifier of yours, as the command line describes it."""

    class_names: Tuple[str, ...]  # output i of the network is class_names[i]
    weights: Path | None  # the checkpoint: a state_dict, a dict holding one, or (allow_pickle) a whole model
    arch: str | None = None  # a torchvision classification architecture, built with num_classes=len(class_names)
    model_file: str | None = None  # "path/to/net.py:ClassName", your own nn.Module
    model_kwargs: Dict[str, Any] | None = None  # keyword arguments for model_file's ClassName
    allow_pickle: bool = False  # also load checkpoints that pickle Python objects (runs code from the file)
    recipe: Recipe = Recipe()  # the eval preprocessing the flags give (see recipe_from_flags)
    # Which Recipe fields the flags gave; the others may come from a timm pretrained_cfg.
    given_preprocessing: Tuple[str, ...] = PREPROCESSING_FIELDS
    ema: bool = False  # use the checkpoint's EMA weights (timm's state_dict_ema)
    head: str | None = None  # "softmax" or "sigmoid"; None: sigmoid for one output, softmax otherwise
    # The eval transform itself (--transforms, or mar_builder.export's transforms=): the recipe is compiled from it.
    transforms: Any = None
    check_photos: Path | None = None  # more photos to check the compiled recipe on (--check-photos)
    # --arch and timm networks: the model's own recipe (torchvision's weights, timm's pretrained_cfg), and for
    # --arch the network built as get_model(weights=DEFAULT) builds it; False: the flags' recipe, weights=None.
    weights_recipe: bool = True

    def __post_init__(self) -> None:
        if self.arch is not None and self.model_file is not None:
            raise SettingsError("--arch and --model-file exclude each other: give one network")
        if self.model_kwargs is not None and self.model_file is None:
            raise SettingsError("--model-kwargs is for --model-file's class; --arch gets num_classes from the classes")
        source = "--arch" if self.arch is not None else "--model-file" if self.model_file is not None else None
        if source is not None and self.weights is None:
            raise SettingsError(f"{source} needs --weights CKPT; without it the network would ship with random weights")
        if source is None and not (self.weights is not None and self.allow_pickle):
            raise SettingsError(
                "say which network: --arch NAME or --model-file FILE.py:NAME, with --weights CKPT "
                "(or --weights MODEL --allow-pickle for a whole pickled model)"
            )
        validate_class_names(self.class_names, "the class list")


def build_predictor(model: UserModel) -> Predictor:
    """The eager Predictor: the network with its weights loaded, the class names and the preprocessing."""
    num_classes = len(model.class_names)
    network: nn.Module | None = None
    if model.arch is not None:
        network = build_architecture(model.arch, num_classes, as_with_weights=model.weights_recipe)
    elif model.model_file is not None:
        network = build_from_model_file(model.model_file, model.model_kwargs or {})
    assert model.weights is not None  # UserModel.__post_init__ guarantees it
    weights = find_weights(load_checkpoint(model.weights, model.allow_pickle), model.weights, ema=model.ema)
    if isinstance(weights, nn.Module) and network is None:
        logger.info("using the whole %s pickled in %s", type(weights).__name__, model.weights)
        network = weights
    elif network is None:
        raise SettingsError(
            f"{model.weights} holds a state_dict: say which network it belongs to with --arch NAME "
            "or --model-file FILE.py:NAME"
        )
    else:
        state_dict = weights.state_dict() if isinstance(weights, nn.Module) else weights
        if model.arch is not None and getattr(network, "aux_logits", True) is False:
            aux = [key for key in state_dict if key.startswith(AUX_HEAD_PREFIXES)]
            if aux:
                logger.info("dropping the %d auxiliary-head weights of %s: they serve no answer", len(aux), model.arch)
                state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_HEAD_PREFIXES)}
        load_weights(network, state_dict, model.weights, num_classes)
    recipe = resolve_recipe(
        model.recipe, model.given_preprocessing, network, model.arch, model.weights_recipe, model.transforms
    )
    if model.transforms is not None:
        check_recipe(model.transforms, recipe, "--transforms", model.check_photos)
    network = network.float().eval()
    head = model.head or default_head(count_outputs(network, recipe.output_size))
    try:
        predictor = Predictor(network, model.class_names, recipe, head)
    except RecipeError as e:  # the head does not fit the network's outputs and the class names
        raise ModelSourceError(str(e)) from None
    check_network_output(predictor)
    return predictor


def check_network_output(predictor: Predictor) -> None:
    """Run the network once on preprocessed random images: it must return logits, one per class name."""
    _, height, width = predictor.recipe.output_size
    num_classes = len(predictor.class_names)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (CHECK_BATCH, 3, height, width), dtype=torch.uint8, generator=generator)
    try:
        with torch.no_grad():
            logits = predictor.model(torch.stack([predictor.preprocess(image) for image in images]))
    except Exception as e:
        raise ModelSourceError(
            f"the network fails on a {CHECK_BATCH}x{'x'.join(map(str, predictor.input_size))} batch "
            "(the recipe's output size): "
            f"{type(e).__name__}: {first_line(e)}"
        ) from e
    if not isinstance(logits, torch.Tensor):
        raise ModelSourceError(
            f"the network returns a {type(logits).__name__}, not one tensor of logits shaped (images, classes)"
        )
    if logits.dim() != 2 or logits.shape[0] != CHECK_BATCH:
        raise ModelSourceError(
            f"the network returns shape {list(logits.shape)} for {CHECK_BATCH} images; "
            f"expected [{CHECK_BATCH}, {num_classes}], one logit per class"
        )
    try:
        check_head(predictor.head, int(logits.shape[1]), num_classes)
    except RecipeError as e:
        raise ModelSourceError(str(e)) from None
    if (
        predictor.head == "softmax"
        and bool((logits >= 0).all())
        and torch.allclose(logits.sum(dim=1), torch.ones(CHECK_BATCH))
    ):
        raise ModelSourceError(
            "the network already outputs probabilities (each row sums to 1); the Predictor applies its own "
            "softmax, so give it the network without its final softmax, returning logits"
        )


def parse_channels(flag: str, text: str) -> Tuple[float, ...]:
    """'0.485,0.456,0.406' to floats; the count is checked by recipe_from_flags."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SettingsError(f"{flag} {text!r}: expected 3 comma-separated numbers, such as 0.485,0.456,0.406") from None


def _listed(values: Tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
