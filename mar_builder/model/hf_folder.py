"""A Hugging Face save_pretrained folder (config.json, model.safetensors, preprocessor_config.json) -> the eager
Predictor: the network loaded offline from the folder's own files, its id2label class names and its processor's
preprocessing."""

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch import nn

from ..errors import ModelSourceError, first_line
from .class_names import validate_class_names
from .predictor import Predictor

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"  # a sharded save_pretrained
PICKLED_WEIGHTS_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
MULTI_LABEL = "multi_label_classification"  # config.json's problem_type that gets the sigmoid head
# What the hub client reads to stay off the network; set while the folder loads (local_files_only as well).
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
# Attention as plain matmul and softmax: the traced graph then holds only operators that torch 2.4 (TorchServe's
# images) loads and that the ONNX exporter converts; SDPA's operator has gained arguments since.
ATTENTION = "eager"


class LogitsOnly(nn.Module):
    """A transformers image classifier as a plain network: pixel_values (N, 3, h, w) float32 -> logits (N, classes).

    transformers models return an ImageClassifierOutput; return_dict=False gives a tuple whose first item is
    the logits (for DeiT's WithTeacher model, the mean of its two heads), which is what tracing needs.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """The Hugging Face libraries never reach the hub inside this block; the environment is restored after.

    huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported: where it was imported before (by the
    caller), its module constant is set for the block as well.
    """
    saved = {name: os.environ.get(name) for name in OFFLINE_ENVIRONMENT}
    os.environ.update(OFFLINE_ENVIRONMENT)
    import huggingface_hub.constants as hub_constants

    was_offline = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = was_offline
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_hf_predictor(folder: Path) -> Predictor:
    """The eager Predictor of a save_pretrained folder: its network (LogitsOnly), id2label's class names, the head
    that problem_type asks for and the Recipe compiled from its image processor. Raises ModelSourceError."""
    from .hf_preprocessing import recipe_from_processor

    network, config = load_network(folder)
    processor = load_processor(folder)
    recipe = recipe_from_processor(processor)
    class_names = class_names_from_config(config, folder)
    head = head_for_problem_type(getattr(config, "problem_type", None), folder)
    logger.info(
        "%s from %s: %d classes (id2label), head %s (problem_type %s)",
        type(network.model).__name__,
        folder,
        len(class_names),
        head,
        getattr(config, "problem_type", None),
    )
    logger.info("preprocessing from %s: %s", type(processor).__name__, recipe.describe())
    return Predictor(network, class_names, recipe, head)


def load_processor(folder: Path) -> Any:
    """The folder's image processor as AutoImageProcessor reads preprocessor_config.json: transformers' default
    (torchvision) backend, from the folder only. Raises ModelSourceError when transformers cannot read it."""
    folder = Path(folder).resolve()
    with hub_offline():
        from transformers import AutoImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # unknown processor types, bad JSON, missing keys: ValueError, OSError, KeyError
            raise ModelSourceError(f"--hf {folder}: {PREPROCESSOR_FILE} cannot be read: {first_line(e)}") from e


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars, advice and deprecation notices, and the tracer's remarks on its shape checks
    (they hold for the one input size the Predictor feeds), silenced while a folder loads and exports."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def check_folder(folder: Path) -> str:
    """The name of the transformers class that the folder's config.json describes, once it is an image classifier
    and the files a served classifier needs are there.

    Raises ModelSourceError naming what is wrong: the folder, config.json (not a save_pretrained folder), a model
    type that is not an image classifier, custom code, preprocessor_config.json, or model.safetensors (a pickled
    pytorch_model.bin is refused: it can run code).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise ModelSourceError(f"--hf {folder}: {what}; give the folder that save_pretrained wrote")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelSourceError(
            f"--hf {folder} is not a save_pretrained folder: it has no {CONFIG_FILE} "
            "(model.save_pretrained(folder) and image_processor.save_pretrained(folder) write the three files needed)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelSourceError(f"--hf: {config_path} is not valid JSON: {e}") from e
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelSourceError(f"--hf: {config_path} has no model_type: it is not a transformers config.json")
    if "auto_map" in config:
        raise ModelSourceError(
            f"--hf: {config_path} names custom code (auto_map); only transformers' own architectures are loaded, "
            "without running code from the folder"
        )
    class_name = image_classifier_name(config["model_type"], config.get("architectures") or [], folder)
    if not (folder / PREPROCESSOR_FILE).is_file():
        raise ModelSourceError(
            f"--hf {folder} has no {PREPROCESSOR_FILE}: the preprocessing the model was trained with is unknown "
            "(image_processor.save_pretrained(folder) writes it)"
        )
    if not any((folder / name).is_file() for name in (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE)):
        pickled = [name for name in PICKLED_WEIGHTS_FILES if (folder / name).is_file()]
        hint = (
            f"; it has {pickled[0]}, a pickle, which is not loaded (it can run code): save the model again with "
            "save_pretrained(folder), which writes safetensors"
            if pickled
            else ""
        )
        raise ModelSourceError(f"--hf {folder} has no {SAFETENSORS_FILE}{hint}")
    return class_name


def image_classifier_name(model_type: str, architectures: List[str], folder: Path) -> str:
    """The transformers class that config.json's model_type and architectures name, if it is an image classifier;
    else ModelSourceError."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    if names is None:
        raise ModelSourceError(
            f"--hf {folder}: model_type {model_type!r} is not a transformers image classifier "
            f"(those are: {', '.join(sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES))})"
        )
    if model_type == "timm_wrapper":
        raise ModelSourceError(
            f"--hf {folder} wraps a timm model (timm_wrapper): export it with --model-file or --arch and its weights"
        )
    known = (names,) if isinstance(names, str) else tuple(names)
    if architectures and architectures[0] not in known:
        raise ModelSourceError(
            f"--hf {folder}: config.json's architectures is {architectures[0]}, not an image classifier "
            f"({' or '.join(known)}); a folder saved from the bare model has no classification head"
        )
    return architectures[0] if architectures else known[0]


def class_names_from_config(config: Any, folder: Path) -> List[str]:
    """id2label's names in index order 0..num_labels-1. Raises ModelSourceError when indices are missing."""
    id2label = {int(index): str(name) for index, name in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise ModelSourceError(
            f"--hf {folder}: config.json's id2label must number its classes 0..N-1, got indices {sorted(id2label)}"
        )
    names = [id2label[i] for i in range(len(id2label))]
    if names == [f"LABEL_{i}" for i in range(len(names))]:
        logger.warning("config.json's id2label holds transformers' placeholder names (LABEL_0, ...): served so")
    return validate_class_names(names, f"{folder}/config.json's id2label")


def head_for_problem_type(problem_type: str | None, folder: Path) -> str:
    """config.json's problem_type -> the Predictor's head: sigmoid for multi-label, softmax for the rest."""
    if problem_type == "regression":
        raise ModelSourceError(f"--hf {folder}: problem_type 'regression' is a regressor, not a classifier")
    return "sigmoid" if problem_type == MULTI_LABEL else "softmax"


def load_network(folder: Path) -> Tuple[nn.Module, Any]:
    """The folder's image classifier (eval mode, float32) wrapped as LogitsOnly, and its config.

    Only the folder's own files are read (local_files_only, HF_HUB_OFFLINE) and only safetensors weights.
    Raises ModelSourceError when the weights do not fit the config (missing or differently shaped tensors).
    """
    folder = Path(folder).resolve()
    with hub_offline():
        class_name = check_folder(folder)
        import transformers
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # unknown model_type, bad values: transformers raises ValueError, KeyError, ...
            raise ModelSourceError(f"--hf {folder}: config.json cannot be read: {first_line(e)}") from e
        model_class = getattr(transformers, class_name)
        try:
            model, info = model_class.from_pretrained(
                folder,
                config=config,
                local_files_only=True,
                use_safetensors=True,
                dtype=torch.float32,
                attn_implementation=ATTENTION,
                # Reported in the loading info rather than raised, so that the refusal names the tensors.
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
        except Exception as e:  # safetensors errors, shape mismatches (RuntimeError), unreadable files
            raise ModelSourceError(
                f"--hf {folder}: the weights do not load into {model_class.__name__}: "
                f"{type(e).__name__}: {first_line(e)}"
            ) from e
    _check_loading_info(info, model_class.__name__, folder)
    return LogitsOnly(model.eval()).eval(), config


def _check_loading_info(info: Dict[str, Any], class_name: str, folder: Path) -> None:
    """Missing or reshaped tensors would be served with random weights: refused, the first few named."""
    missing = sorted(info.get("missing_keys") or [])
    # mismatched_keys: (name, shape in the file, shape in the model) tuples
    mismatched = sorted(str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys") or [])
    if missing or mismatched:
        problems = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"of another shape {_few(mismatched)}"] if mismatched else []
        )
        raise ModelSourceError(
            f"--hf {folder}: {SAFETENSORS_FILE} does not fit config.json's {class_name}: tensors {'; '.join(problems)}"
        )
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        logger.warning("%s holds tensors %s does not use: %s", SAFETENSORS_FILE, class_name, _few(unexpected))


def _few(names: List[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
