"""Read a built .mar (a zip): its manifest and .pt, and write a copy whose handler answers every class."""

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import yaml

from ..errors import ValidationError

MANIFEST = "MAR-INF/MANIFEST.json"


@dataclass(frozen=True)
class MarManifest:
    model_name: str  # the name TorchServe registers the archive under
    serialized_file: str  # the exported Predictor .pt inside the zip
    config_file: str | None  # model-config.yaml inside the zip (workers, batching, handler settings)


def read_manifest(mar: Path) -> MarManifest:
    """The model section of MAR-INF/MANIFEST.json. Raises ValidationError for a file that is not an archive."""
    try:
        with zipfile.ZipFile(mar) as z:
            manifest = json.loads(z.read(MANIFEST))
            names = set(z.namelist())
    except FileNotFoundError:
        raise ValidationError(f"--mar {mar}: no such file; build one with ./build_mar.sh") from None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, IsADirectoryError) as e:
        raise ValidationError(f"--mar {mar}: not a model archive built by torch-model-archiver ({e})") from None
    model = manifest.get("model", {})
    serialized = model.get("serializedFile")
    if not serialized or serialized not in names:
        raise ValidationError(f"--mar {mar}: its manifest names no serializedFile inside the archive")
    return MarManifest(model.get("modelName") or mar.stem, serialized, model.get("configFile"))


def archive_handler_settings(mar: Path, manifest: MarManifest) -> Dict[str, Any]:
    """The `handler:` section of the archive's model-config.yaml (empty when it has none)."""
    config = {}
    if manifest.config_file:
        with zipfile.ZipFile(mar) as z:
            config = yaml.safe_load(z.read(manifest.config_file)) or {}
    return dict(config.get("handler") or {})


def extract_member(mar: Path, member: str, destination: Path) -> Path:
    """Copy one file of the archive to `destination` (a folder); returns its path."""
    target = destination / Path(member).name
    with zipfile.ZipFile(mar) as z, z.open(member) as source, open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
    return target


def copy_answering_all_classes(mar: Path, manifest: MarManifest, topk: int, destination: Path) -> Path:
    """`destination`/<model name>.mar: the archive unchanged except that its handler answers `topk` labels."""
    return copy_with_handler_settings(mar, manifest, {"topk": topk}, destination)


def copy_with_handler_settings(mar: Path, manifest: MarManifest, settings: Dict[str, Any], destination: Path) -> Path:
    """`destination`/<model name>.mar: the archive unchanged except for these settings of its handler
    (the `handler:` section of model-config.yaml).

    The user's archive is not touched. An archive without a model-config.yaml gets one holding only
    the `handler:` settings, and its manifest then names it.
    """
    target = destination / f"{manifest.model_name}.mar"
    config_name = manifest.config_file or "model-config.yaml"
    with zipfile.ZipFile(mar) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        config = {}
        if manifest.config_file:
            config = yaml.safe_load(source.read(manifest.config_file)) or {}
        config.setdefault("handler", {})
        config["handler"] = dict(config["handler"] or {}, **settings)
        for item in source.infolist():
            if item.filename == config_name:
                continue
            data = source.read(item)
            if item.filename == MANIFEST and not manifest.config_file:
                listed = json.loads(data)
                listed["model"]["configFile"] = config_name
                data = json.dumps(listed, indent=2).encode()
            copy.writestr(item, data)
        copy.writestr(config_name, yaml.safe_dump(config, sort_keys=False))
    return target
