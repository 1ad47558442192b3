"""validate --hf DIR: the eager reference of an archive built from a Hugging Face folder, namely the folder's model
with the folder's own image processor (AutoImageProcessor, transformers' default backend) on PIL images."""

from pathlib import Path
from typing import Callable, Tuple

import torch
from PIL import Image
from torch import nn

from ..errors import ValidationError
from .in_process import PtSettings


def hf_reference(folder: Path, settings: PtSettings) -> Tuple[nn.Module, Callable[[Image.Image], torch.Tensor]]:
    """The folder's network (logits) and its processor as a function: PIL RGB image -> pixel_values (3, h, w).

    Raises ValidationError when the folder's id2label or problem_type do not match the archive's class_names
    and head (the archive was built from another folder), ModelSourceError when the folder cannot be read.
    """
    from ..model.hf_folder import (
        class_names_from_config,
        head_for_problem_type,
        load_network,
        load_processor,
        quiet_transformers,
    )

    with quiet_transformers():
        network, config = load_network(folder)
        processor = load_processor(folder)
    names = class_names_from_config(config, folder)
    if tuple(names) != tuple(settings.class_names):
        raise ValidationError(
            f"--hf {folder}: its id2label ({len(names)} classes, such as {names[0]!r}) is not the archive's "
            f"class_names ({len(settings.class_names)}, such as {settings.class_names[0]!r}): another model"
        )
    head = head_for_problem_type(getattr(config, "problem_type", None), folder)
    if head != settings.head:
        raise ValidationError(
            f"--hf {folder}: its problem_type asks for the {head} head, the archive has {settings.head}"
        )

    def pixel_values(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    return network, pixel_values
