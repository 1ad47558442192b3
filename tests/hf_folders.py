"""Tiny random Hugging Face image classifiers, saved as save_pretrained folders with the hub's own
preprocessor_config.json files (old integer sizes and feature_extractor_type included)."""

import json
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

# preprocessor_config.json as the hub's model cards hold them, byte for byte in content (keys sorted as saved).
# google/vit-base-patch16-224: written by the old ViTFeatureExtractor, an integer size (a square).
VIT_PROCESSOR = {
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "size": 224,
}
# facebook/convnext-tiny-224: crop_pct 0.875 below 384, so the shorter side goes to 256, then the centre 224.
CONVNEXT_PROCESSOR = {
    "crop_pct": 0.875,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ConvNextFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "size": 224,
}
# facebook/convnext-base-384: at 384 and above ConvNeXt squashes to a square, no crop.
CONVNEXT_384_PROCESSOR = {**CONVNEXT_PROCESSOR, "size": 384}
# facebook/deit-base-distilled-patch16-224: 256 x 256 (an integer size is a square for DeiT), then the centre 224.
DEIT_PROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "DeiTFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "size": 256,
}
# apple/mobilevit-small: the shorter side to 288 (bilinear), the centre 256, BGR, no normalisation.
MOBILEVIT_PROCESSOR = {
    "crop_size": 256,
    "do_center_crop": True,
    "do_flip_channel_order": True,
    "do_resize": True,
    "feature_extractor_type": "MobileViTFeatureExtractor",
    "resample": 2,
    "size": 288,
}
# microsoft/beit-base-patch16-224: a squash; reduce_labels (segmentation maps) is the old name of do_reduce_labels.
BEIT_PROCESSOR = {
    "crop_size": 224,
    "do_center_crop": False,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "BeitFeatureExtractor",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "reduce_labels": False,
    "resample": 2,
    "size": 224,
}
# facebook/dinov2-base: BiT's processor, the shorter side to 256 (bicubic), the centre 224.
DINOV2_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
# microsoft/swin-tiny-patch4-window7-224: the old ViTFeatureExtractor with ImageNet's mean and std, bicubic.
SWIN_PROCESSOR = {
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "size": 224,
}
# What transformers 4.x's Trainer writes for a fine-tuned ConvNeXt (image_processor_type, dict sizes).
CONVNEXT_PROCESSOR_SAVED = {
    "crop_pct": 0.875,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "ConvNextImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

LABELS = ["tabby cat", "espresso", "space shuttle", "goldfish"]
# Chosen so that the classes are far apart on real photos: probabilities differ well beyond 1e-4.
LOGIT_SCALE = 20.0


def _vit(config_kwargs: Dict[str, Any]) -> Any:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, **config_kwargs,
    )  # fmt: skip
    return ViTForImageClassification(config)


def _convnext(config_kwargs: Dict[str, Any]) -> Any:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **config_kwargs)
    return ConvNextForImageClassification(config)


def _mobilevit(config_kwargs: Dict[str, Any]) -> Any:
    from transformers import MobileViTConfig, MobileViTForImageClassification

    config = MobileViTConfig(
        image_size=256, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
        num_attention_heads=2, **config_kwargs,
    )  # fmt: skip
    model = MobileViTForImageClassification(config)
    # transformers draws every weight with std 0.02: through MobileViT's ~30 layers the features vanish and every
    # image gets the same answer. Unit-gain weights keep the answers input-dependent.
    with torch.no_grad():
        for module in model.mobilevit.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
    return model


# name -> (network builder, preprocessor_config.json, extra config.json settings, classifier weight scale)
FAMILIES: Dict[str, tuple] = {
    "vit": (_vit, VIT_PROCESSOR, {}, LOGIT_SCALE),
    "convnext": (_convnext, CONVNEXT_PROCESSOR, {}, LOGIT_SCALE),
    "deit": (_vit, DEIT_PROCESSOR, {}, LOGIT_SCALE),  # facebook/deit-*: a ViT network with DeiT's processor
    "mobilevit": (_mobilevit, MOBILEVIT_PROCESSOR, {}, 20 * LOGIT_SCALE),  # its pooled features vary little
    "convnext-multilabel": (
        _convnext,
        CONVNEXT_PROCESSOR_SAVED,
        {"problem_type": "multi_label_classification"},
        LOGIT_SCALE,
    ),
}


def save_hf_folder(folder: Path, family: str, labels: List[str] = LABELS, seed: int = 0) -> Path:
    """A save_pretrained folder of `family` (see FAMILIES): config.json, model.safetensors, preprocessor_config.json."""
    build, processor, extra, logit_scale = FAMILIES[family]
    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    model = build({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}, **extra}).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # transformers initialises BatchNorm weights near 0: MobileViT's features would vanish. Eval-mode
                # statistics away from (0, 1) also check that the export keeps them.
                module.weight.fill_(1.0)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        model.classifier.weight.mul_(logit_scale)
    model.save_pretrained(folder)
    write_processor_config(folder, processor)
    return folder


def write_processor_config(folder: Path, processor: Dict[str, Any]) -> None:
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")


def hf_reference(folder: Path, backend: str = "torchvision") -> Callable[[Any], torch.Tensor]:
    """The folder's own processor (AutoImageProcessor.from_pretrained) as a function: PIL image -> (3, h, w)."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend=backend)
    return lambda image: processor(images=image, return_tensors="pt")["pixel_values"][0]


def hf_probabilities(folder: Path, pixel_values: torch.Tensor) -> torch.Tensor:
    """The folder's model on `pixel_values` (N, 3, h, w): softmax, or sigmoid for a multi-label problem_type."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    if model.config.problem_type == "multi_label_classification":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)
