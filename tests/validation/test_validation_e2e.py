"""validate end to end: a generated 3-class folder, a tiny archive, a real TorchServe on loopback."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from validation_data import BROKEN, CLASSES, PHOTOS_PER_CLASS, ROTATED, UNKNOWN, build_archive, write_photos

from mar_builder.cli import main
from mar_builder.constants import REPO_ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One validate run with the default threshold: its exit code, output folder, archive and log."""
    root = tmp_path_factory.mktemp("validate")
    data = write_photos(root / "photos")
    mar = build_archive(root)
    before = mar.read_bytes()
    code = main(["validate", "--data", str(data), "--mar", str(mar)])
    return code, mar.parent / "colours-validation", mar, before


def test_every_photo_is_measured_three_ways_and_the_rotated_one_disagrees(run):
    code, out, _, _ = run
    summary = json.loads((out / "summary.json").read_text())
    measured = len(CLASSES) * PHOTOS_PER_CLASS + 1
    assert summary["photos"] == measured
    # The rotated photo is red on the left as ImageFolder reads it, blue once the handler applies EXIF.
    assert summary["top1"] == {"eager": 1.0, "pt": 1.0, "served": pytest.approx((measured - 1) / measured)}
    assert summary["top5"] == {"eager": 1.0, "pt": 1.0, "served": 1.0}
    assert summary["agreement_top1"] == {"pt": 1.0, "served": pytest.approx((measured - 1) / measured)}
    assert "classify in onnxruntime" in summary["run"]["served"]  # the archive's default runtime
    assert summary["exif_rotated"] == 1 and summary["served_refused"] == 0
    [disagreement] = summary["disagreements"]["served"]
    assert disagreement["file"] == ROTATED and disagreement["label"] == "red"
    assert disagreement["eager"][0][0] == "red" and disagreement["served"][0][0] == "blue"
    assert len(disagreement["eager"]) == 3 and len(disagreement["served"]) == 3
    # The served answer held every class, so the probability differences cover all of them.
    assert summary["probability_difference"]["served"]["max"] > 0.9
    assert summary["probability_difference"]["pt"]["max"] < 0.01
    assert summary["per_class"]["red"] == {"photos": 4, "top1": {"eager": 1.0, "pt": 1.0, "served": 0.75}}


def test_bad_data_is_counted_and_named_not_fatal(run):
    _, out, _, _ = run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"unknown_label": 1, "unreadable": 1}
    bad = {b["file"]: b for b in summary["bad_photos"]}
    assert bad[UNKNOWN]["message"] == "label 'purple' is not among the archive's 3 class_names"
    assert bad[BROKEN]["kind"] == "unreadable"
    assert (
        bad[BROKEN]["message"] == "UnidentifiedImageError: not an image Pillow can identify (first bytes 74 68 69 73)"
    )


def test_agreement_below_the_default_threshold_exits_1(run):
    code, out, _, _ = run
    assert code == 1
    assert json.loads((out / "summary.json").read_text())["passed"] is False


def test_the_html_report_is_self_contained_with_thumbnails_and_both_top3(run):
    _, out, _, _ = run
    page = (out / "report.html").read_text()
    assert "FAIL" in page and ROTATED in page and "EXIF-rotated: shown upright, as the handler decodes it" in page
    assert "the network inside the archive&#x27;s .pt stands in for the eager model" in page
    thumbnails = re.findall(r"src='([^']*)'", page)
    assert len(thumbnails) == 1 and thumbnails[0].startswith("data:image/jpeg;base64,")
    assert not re.search(r"(href|src)=['\"]?(https?:|file:|/)", page)
    card = page[page.index(ROTATED) :]
    # Each top-3 list starts with its top-1: red (the true label, marked) for eager, blue for served.
    eager_list, served_list = card.index("<ol><li class=right>red "), card.index("<ol><li>blue ")
    assert card.index("(a) eager") < eager_list < card.index("(c) served") < served_list


def test_the_users_archive_is_left_as_it_was(run):
    _, _, mar, before = run
    assert mar.read_bytes() == before
    with zipfile.ZipFile(mar) as z:
        assert yaml.safe_load(z.read("model-config.yaml"))["handler"]["topk"] == 2


def test_a_labels_csv_run_within_the_threshold_exits_0_into_out(run, tmp_path):
    _, _, mar, _ = run
    data = mar.parent.parent / "photos"
    rows = [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.glob("*/*.*")) if p.parent.name != "purple"]
    (tmp_path / "labels.csv").write_text("file,colour\n" + "\n".join(rows) + "\n")
    out = tmp_path / "report"
    flags = ["--labels-csv", str(tmp_path / "labels.csv"), "--label-column", "colour", "--min-agreement", "0.9"]
    code = main(["validate", "--data", str(data), "--mar", str(mar), "--out", str(out), *flags])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["photos"] == len(CLASSES) * PHOTOS_PER_CLASS + 1 and summary["passed"] is True
    assert summary["skipped"] == {"unknown_label": 0, "unreadable": 1}
    assert (out / "report.html").read_text().count("PASS") == 1


def processes_mentioning(text: str):
    """The command lines of live processes that contain `text` (TorchServe's JVM and workers name their TMPDIR)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_sigterm_stops_the_server_it_started(run, tmp_path):
    _, _, mar, _ = run
    command = [sys.executable, "-m", "mar_builder", "validate", "--data", str(mar.parent.parent / "photos")]
    command += ["--mar", str(mar), "--out", str(tmp_path / "out")]
    env = dict(os.environ, TMPDIR=str(tmp_path), TEMP=str(tmp_path))
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("mar_builder-validate-*/torchserve/console.log")):
            assert process.poll() is None and time.monotonic() < deadline, "validate never started TorchServe"
            time.sleep(0.2)
        assert processes_mentioning(f"{tmp_path}/mar_builder-validate-"), "TorchServe was not running"
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 128 + signal.SIGTERM
    finally:
        process.kill()
    assert processes_mentioning(f"{tmp_path}/mar_builder-validate-") == []
    assert list(tmp_path.glob("mar_builder-validate-*")) == []
