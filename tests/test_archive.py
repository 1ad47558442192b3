import zipfile

import pytest
import yaml

from mar_builder.archive import handler_extra_files, pack_archive
from mar_builder.errors import ExportError


def test_archive_holds_the_pt_handler_helpers_and_config(tiny_pt, tmp_path):
    store = tmp_path / "store"
    mar = pack_archive(tiny_pt, "tiny", "2.0", store, topk=3)
    assert mar == store / "tiny.mar"
    names = set(zipfile.ZipFile(mar).namelist())
    expected = {"tiny.pt", "classifier_handler.py", "model-config.yaml", "MAR-INF/MANIFEST.json"}
    expected |= {p.name for p in handler_extra_files()}
    assert expected <= names
    assert {"image_decoding.py", "request_payload.py", "request_errors.py"} <= names
    with zipfile.ZipFile(mar) as archive:
        config = yaml.safe_load(archive.read("model-config.yaml"))
        manifest = yaml.safe_load(archive.read("MAR-INF/MANIFEST.json"))
        assert archive.read("tiny.pt") == tiny_pt.read_bytes()
    assert config["handler"]["topk"] == 3 and config["batchSize"] >= 2
    assert manifest["model"]["modelVersion"] == "2.0" and manifest["model"]["handler"] == "classifier_handler.py"


def test_building_twice_replaces_the_archive(tiny_pt, tmp_path):
    store = tmp_path / "store"
    first = pack_archive(tiny_pt, "tiny", "1.0", store, topk=3).read_bytes()
    pack_archive(tiny_pt, "tiny", "1.1", store, topk=3)
    assert sorted(p.name for p in store.iterdir()) == ["tiny.mar"]
    assert store.joinpath("tiny.mar").read_bytes() != first


def test_failed_packing_keeps_the_previous_archive(tiny_pt, tmp_path):
    store = tmp_path / "store"
    pack_archive(tiny_pt, "tiny", "1.0", store, topk=3)
    before = store.joinpath("tiny.mar").read_bytes()
    with pytest.raises(ExportError, match="torch-model-archiver failed"):
        pack_archive(tmp_path / "missing.pt", "tiny", "1.1", store, topk=3)
    assert store.joinpath("tiny.mar").read_bytes() == before
    assert sorted(p.name for p in store.iterdir()) == ["tiny.mar"]
