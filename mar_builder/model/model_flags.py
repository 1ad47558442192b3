"""The flags that say which classifier to export, shared by `export` and `build`: declared and resolved here."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, List

from ..errors import SettingsError

if TYPE_CHECKING:  # user_model imports torch: the command line loads it only when a model is built
    from .user_model import UserModel

# Flags that describe your own model (argparse dest -> flag); none of them means the default model.
USER_MODEL_FLAGS = {
    "arch": "--arch",
    "model_file": "--model-file",
    "model_kwargs": "--model-kwargs",
    "weights": "--weights",
    "allow_pickle": "--allow-pickle",
    "classes": "--classes",
    "classes_from_dir": "--classes-from-dir",
    "mean": "--mean",
    "std": "--std",
    "resize": "--resize",
    "crop": "--crop",
    "ema": "--ema",
    "head": "--head",
    "transforms": "--transforms",
    "check_photos": "--check-photos",
    "interpolation": "--interpolation",
    "channel_order": "--channel-order",
    "no_weights_recipe": "--no-weights-recipe",
}
NETWORK_FLAGS = ("arch", "model_file", "weights")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group(
        "your own model (without these flags: the embedded EfficientNet-Lite0 with the ImageNet labels)"
    )
    network = source.add_mutually_exclusive_group()
    network.add_argument(
        "--arch",
        metavar="NAME",
        help="a torchvision classification architecture, e.g. resnet50; built as get_model(NAME, "
        "weights=DEFAULT) builds it (nothing downloaded), with num_classes=len(classes), and served with the "
        "recipe of those weights (see --no-weights-recipe)",
    )
    network.add_argument(
        "--model-file",
        metavar="FILE.py:NAME",
        help="your nn.Module class (or a function returning one) in a Python file; needed at export time only",
    )
    network.add_argument(
        "--hf",
        type=Path,
        metavar="DIR",
        help="a Hugging Face transformers image classifier's save_pretrained folder (config.json, "
        "model.safetensors, preprocessor_config.json): class names from id2label, the sigmoid head for "
        "problem_type multi_label_classification (else softmax), preprocessing compiled from its image processor; "
        "read offline, from the folder's files only, and traced (transformers is needed to build, not to serve)",
    )
    network.add_argument(
        "--pt",
        type=Path,
        metavar="EXPORTED.pt",
        help="a TorchScript classifier with class_names, such as the tutorial's scripted Predictor: checked, "
        "then served through its own forward (a Predictor exported by this tool is packed as it is)",
    )
    source.add_argument(
        "--model-kwargs", metavar="JSON", help="keyword arguments for --model-file, e.g. '{\"num_classes\": 5}'"
    )
    source.add_argument(
        "--weights",
        type=Path,
        metavar="CKPT",
        help="the checkpoint: a state_dict or a dict holding one under "
        "'state_dict', 'model' or 'model_state_dict'; loaded with weights_only=True onto the CPU",
    )
    source.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load checkpoints that pickle Python objects, such as a "
        "whole model from torch.save(model); this runs any code in the file: only for files you trust",
    )
    source.add_argument(
        "--ema",
        action="store_true",
        help="use the checkpoint's EMA weights (timm's 'state_dict_ema', or 'model_ema', 'ema_state_dict')",
    )
    classes = source.add_mutually_exclusive_group()
    classes.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="class names in output order: one per line, a JSON list, "
        'or an index_to_name.json object {"0": "name", ...}',
    )
    classes.add_argument(
        "--classes-from-dir",
        type=Path,
        metavar="DIR",
        help="class names from DIR's sorted subfolders, numbered as torchvision's ImageFolder numbers them",
    )
    preprocessing = parser.add_argument_group(
        "preprocessing of your own model (see docs/recipes.md). Default: --arch's torchvision weights recipe, a timm "
        "network's pretrained_cfg, else resize 256 bilinear, crop 224, ImageNet's mean and std; a flag replaces "
        "its value"
    )
    preprocessing.add_argument(
        "--transforms",
        metavar="FILE.py:NAME",
        help="your eval transform itself (torchvision v1/v2 Compose or nn.Sequential, timm's create_transform, "
        "or a function returning one), compiled step by step into the Predictor and checked on photos",
    )
    preprocessing.add_argument(
        "--check-photos",
        type=Path,
        metavar="DIR",
        help="with --transforms: also check the compiled recipe on these photos (besides samples/)",
    )
    preprocessing.add_argument(
        "--no-weights-recipe",
        action="store_true",
        help="a network trained from scratch: ignore torchvision's weights recipe (--arch, built as weights=None "
        "builds it) and timm's pretrained_cfg; the flags and their defaults make the recipe",
    )
    preprocessing.add_argument("--mean", metavar="R,G,B", help="normalization mean (default: 0.485,0.456,0.406)")
    preprocessing.add_argument("--std", metavar="R,G,B", help="normalization std (default: 0.229,0.224,0.225)")
    preprocessing.add_argument("--resize", type=int, metavar="PIXELS", help="resize the short side (default: 256)")
    preprocessing.add_argument("--crop", type=int, metavar="PIXELS", help="then crop the centre (default: 224)")
    preprocessing.add_argument(
        "--interpolation",
        choices=("bilinear", "bicubic", "nearest", "nearest-exact"),
        help="how --resize resamples (default: bilinear, antialiased)",
    )
    preprocessing.add_argument(
        "--channel-order", choices=("RGB", "BGR"), help="the channel order the network takes (default: RGB)"
    )
    source.add_argument(
        "--head",
        choices=("softmax", "sigmoid"),
        help="how logits become probabilities: softmax (classes exclude each other) or sigmoid (multi-label: each "
        "class its own probability). Default: sigmoid for a network with one output (a binary classifier trained "
        "with BCEWithLogitsLoss: one class name answers its probability, two (negative, positive) answer both), "
        "softmax otherwise",
    )
    source.add_argument(
        "--rebuild",
        action="store_true",
        help="with --pt: read a tutorial-style Predictor's network and Resize/CenterCrop/Normalize and export "
        "this tool's Predictor from them (batched, faster), verified against the file's own forward",
    )
    source.add_argument(
        "--trace", action="store_true", help="trace the inner network; by default scripting is tried first"
    )


def user_model_from_args(args: argparse.Namespace) -> "UserModel | None":
    """Your model as the flags describe it; None for --hf, for --pt (see pt_class_names) and for the default model."""
    from .class_names import class_names_from_dir, read_class_names
    from .model_sources import parse_model_kwargs
    from .transform_check import load_transform
    from .user_model import UserModel, recipe_from_flags

    given = [flag for dest, flag in USER_MODEL_FLAGS.items() if getattr(args, dest) not in (None, False)]
    if args.hf is not None:
        # The folder holds the network, its weights, class names, head and preprocessing; it is always traced.
        extra = given + (["--rebuild"] if args.rebuild else [])
        if extra:
            raise SettingsError(
                f"--hf reads the network, class names, head and preprocessing from the folder; drop {', '.join(extra)}"
            )
        return None
    if args.pt is not None:
        # Class names may stand in for those of a module that has none (a traced one); nothing else applies.
        extra = [flag for flag in given if flag not in ("--classes", "--classes-from-dir")]
        extra += ["--trace"] if args.trace else []
        if extra:
            raise SettingsError(f"--pt takes a TorchScript classifier as it is; drop {', '.join(extra)}")
        return None
    if args.rebuild:
        raise SettingsError("--rebuild reads a scripted Predictor: it goes with --pt FILE.pt")
    if not given:
        return None
    if not any(getattr(args, dest) is not None for dest in NETWORK_FLAGS):
        raise SettingsError(
            f"{', '.join(given)} describe your own model: add --arch NAME or --model-file FILE.py:NAME, "
            "with --weights CKPT"
        )
    recipe = recipe_from_flags(args.mean, args.std, args.resize, args.crop, args.interpolation, args.channel_order)
    transforms = load_transform(args.transforms) if args.transforms is not None else None
    if args.check_photos is not None and transforms is None:
        raise SettingsError("--check-photos checks a --transforms recipe: add --transforms FILE.py:NAME")
    model_kwargs = parse_model_kwargs(args.model_kwargs) if args.model_kwargs is not None else None
    if args.classes is not None:
        class_names = read_class_names(args.classes)
    elif args.classes_from_dir is not None:
        class_names = class_names_from_dir(args.classes_from_dir)
    else:
        raise SettingsError("your own model needs its class names: --classes FILE or --classes-from-dir DIR")
    flags = {
        "mean": args.mean,
        "std": args.std,
        "resize": args.resize,
        "crop": args.crop,
        "interpolation": args.interpolation,
        "channel_order": args.channel_order,
    }
    return UserModel(
        given_preprocessing=tuple(name for name, value in flags.items() if value is not None),
        ema=args.ema,
        class_names=tuple(class_names),
        weights=args.weights,
        arch=args.arch,
        model_file=args.model_file,
        model_kwargs=model_kwargs,
        allow_pickle=args.allow_pickle,
        recipe=recipe,
        head=args.head,
        transforms=transforms,
        check_photos=args.check_photos,
        weights_recipe=not args.no_weights_recipe,
    )


def pt_class_names(args: argparse.Namespace) -> "List[str] | None":
    """The class names that --classes or --classes-from-dir give for a --pt module, else None."""
    from .class_names import class_names_from_dir, read_class_names

    if args.classes is not None:
        return read_class_names(args.classes)
    if args.classes_from_dir is not None:
        return class_names_from_dir(args.classes_from_dir)
    return None
