"""validation/mar_files.py: the manifest, and a copy of an archive that answers every class."""

import json
import zipfile

import pytest
import yaml

from mar_builder.errors import ValidationError
from mar_builder.validation.mar_files import MANIFEST, copy_answering_all_classes, extract_member, read_manifest

CONFIG = "# comment\nminWorkers: 2\nbatchSize: 2\nhandler:\n  topk: 5\n  jpeg_draft_factor: 4\n"


def write_mar(path, config=CONFIG):
    model = {"modelName": "landmarks", "serializedFile": "landmarks.pt", "handler": "classifier_handler.py"}
    if config is not None:
        model["configFile"] = "model-config.yaml"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("landmarks.pt", b"weights")
        z.writestr("classifier_handler.py", "# handler")
        if config is not None:
            z.writestr("model-config.yaml", config)
        z.writestr(MANIFEST, json.dumps({"runtime": "python", "model": model}))
    return path


def test_the_copy_changes_only_the_handler_topk(tmp_path):
    mar = write_mar(tmp_path / "landmarks.mar")
    before = mar.read_bytes()
    manifest = read_manifest(mar)
    assert (manifest.model_name, manifest.serialized_file, manifest.config_file) == (
        "landmarks",
        "landmarks.pt",
        "model-config.yaml",
    )
    (tmp_path / "store").mkdir()
    copy = copy_answering_all_classes(mar, manifest, 1000, tmp_path / "store")
    assert copy == tmp_path / "store" / "landmarks.mar"
    assert mar.read_bytes() == before  # the user's archive is untouched
    with zipfile.ZipFile(copy) as z:
        assert sorted(z.namelist()) == sorted(zipfile.ZipFile(mar).namelist())
        assert yaml.safe_load(z.read("model-config.yaml")) == {
            "minWorkers": 2,
            "batchSize": 2,
            "handler": {"topk": 1000, "jpeg_draft_factor": 4},
        }
        assert z.read("landmarks.pt") == b"weights"
    assert extract_member(copy, "landmarks.pt", tmp_path).read_bytes() == b"weights"


def test_an_archive_without_model_config_gets_one_in_the_copy(tmp_path):
    mar = write_mar(tmp_path / "landmarks.mar", config=None)
    (tmp_path / "store").mkdir()
    copy = copy_answering_all_classes(mar, read_manifest(mar), 7, tmp_path / "store")
    with zipfile.ZipFile(copy) as z:
        assert yaml.safe_load(z.read("model-config.yaml")) == {"handler": {"topk": 7}}
        assert json.loads(z.read(MANIFEST))["model"]["configFile"] == "model-config.yaml"


def test_files_that_are_not_archives_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValidationError, match=r"no such file; build one with ./build_mar.sh"):
        read_manifest(tmp_path / "missing.mar")
    (tmp_path / "photo.mar").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValidationError, match="not a model archive built by torch-model-archiver"):
        read_manifest(tmp_path / "photo.mar")
    with zipfile.ZipFile(tmp_path / "empty.mar", "w") as z:
        z.writestr(MANIFEST, json.dumps({"model": {"serializedFile": "gone.pt"}}))
    with pytest.raises(ValidationError, match="names no serializedFile inside the archive"):
        read_manifest(tmp_path / "empty.mar")
