import subprocess
import sys
import zipfile

import pytest
import yaml

from mar_builder.archive.model_archive import REPO_ROOT, handler_extra_files, pack_archive
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


def test_the_archiver_stages_in_a_folder_of_its_own_not_tmpdir_name(tiny_pt, tmp_path, monkeypatch):
    # torch-model-archiver stages in $TMPDIR/<name>/ after deleting it: a file there breaks any build
    # that stages in the shared temp folder, as a concurrent build of the same name does.
    shared_tmp = tmp_path / "shared_tmp"
    shared_tmp.mkdir()
    (shared_tmp / "tiny").write_text("another build's staging folder")
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    mar = pack_archive(tiny_pt, "tiny", "1.0", tmp_path / "store", topk=3)
    assert zipfile.ZipFile(mar).read("tiny.pt") == tiny_pt.read_bytes()
    assert (shared_tmp / "tiny").read_text() == "another build's staging folder"


def test_parallel_builds_of_one_name_all_succeed_with_complete_archives(tiny_pt, tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "mar_builder", "build", "--pt", str(tiny_pt), "--name", "tiny"]
    command += ["--model-store", str(store)]
    builds = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    outputs = [build.communicate(timeout=600)[0] for build in builds]
    assert [build.returncode for build in builds] == [0, 0, 0], outputs
    with zipfile.ZipFile(store / "tiny.mar") as archive:
        assert archive.testzip() is None
        assert archive.read("tiny.pt") == tiny_pt.read_bytes()
        assert {"classifier_handler.py", "model-config.yaml", "MAR-INF/MANIFEST.json"} <= set(archive.namelist())
    assert sorted(p.name for p in store.iterdir()) == ["tiny.mar"]  # no staging folder left behind
