"""validation/report.py: summary.json as written, and an HTML page that escapes what it shows."""

import json

from PIL import Image

from mar_builder.validation.report import render, results_text, write_summary


def summary(**changes):
    base = {
        "photos": 2,
        "top1": {"eager": 0.5, "pt": 0.5, "served": 0.5},
        "top5": {"eager": 1.0, "pt": 1.0, "served": 1.0},
        "agreement_top1": {"pt": 1.0, "served": 0.5},
        "probability_difference": {"pt": {"max": 0.001, "mean": 0.0005}, "served": {"max": 0.6, "mean": 0.3}},
        "min_agreement_served": 0.99,
        "passed": False,
        "served_refused": 0,
        "exif_rotated": 1,
        "skipped": {"unknown_label": 0, "unreadable": 0},
        "per_class": {"<b>cat": {"photos": 2, "top1": {"eager": 0.5, "pt": 0.5, "served": 0.5}}},
        "disagreements": {
            "served": [
                {
                    "file": "cats/<img>.jpg",
                    "label": "<b>cat",
                    "eager": [["<b>cat", 0.9], ["dog", 0.05], ["fox", 0.01]],
                    "served": [["dog", 0.7], ["<b>cat", 0.2], ["fox", 0.05]],
                }
            ],
            "pt": [],
        },
        "bad_photos": [],
        "run": {"archive": "/m/x.mar", "data": "photos", "eager": "stand-in", "served": "copy", "preprocessing": "p"},
    }
    return {**base, **changes}


def test_the_page_escapes_names_and_embeds_the_thumbnail(tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (400, 300), (200, 10, 10)).save(photo)
    page = render(summary(), {"cats/<img>.jpg": photo})
    assert "<b>cat" not in page and "&lt;b&gt;cat" in page and "cats/&lt;img&gt;.jpg" in page
    assert page.count("src='data:image/jpeg;base64,") == 1
    assert "FAIL: the served top-1 agrees with the eager top-1 on 50.0 % of the photos (threshold 99.0 %)" in page
    # The true label is marked in both lists.
    assert page.count("<li class=right>&lt;b&gt;cat") == 2


def test_the_page_says_when_nothing_differs_and_missing_photos_do_not_break_it():
    page = render(summary(disagreements={"served": [summary()["disagreements"]["served"][0]], "pt": []}), {})
    assert "<img alt='(no file)'>" in page
    assert "None: every photo has the same top-1." in page


def test_summary_json_round_trips_and_the_text_lists_disagreements(tmp_path):
    path = write_summary(tmp_path / "out", summary())
    assert json.loads(path.read_text())["agreement_top1"] == {"pt": 1.0, "served": 0.5}
    text = results_text(summary())
    assert "(c) served" in text and "50.0 %" in text
    assert "served differs: cats/<img>.jpg (label <b>cat): eager <b>cat 0.900, served dog 0.700" in text


def test_per_class_rows_put_the_lowest_accuracy_of_any_source_first_and_mark_differences():
    per_class = {
        "ant": {"photos": 1, "top1": {"eager": 1.0, "pt": 1.0, "served": 1.0}},
        "Bee": {"photos": 1, "top1": {"eager": 1.0, "pt": 0.0, "served": 1.0}},
        "cat": {"photos": 2, "top1": {"eager": 0.5, "pt": 0.5, "served": 0.5}},
    }
    page = render(summary(per_class=per_class), {})
    assert page.index("<td>Bee</td>") < page.index("<td>cat</td>") < page.index("<td>ant</td>")
    assert "<tr class=differs><td>Bee</td>" in page and "<tr><td>cat</td>" in page


def test_an_int8_archive_gets_its_comparison_with_fp32_on_the_page_and_in_the_text():
    build = {"calibration_photos": 100, "held_out_photos": 100, "held_out_agreement_top1": 0.99}
    int8 = summary(precision="int8", int8_vs_fp32={"agreement_top1": 0.98, "top1_change_points": -0.5, "build": build})
    line = (
        "int8 (c) against fp32 (b): the same top-1 on 98.0 % of these photos, top-1 accuracy -0.5 points; "
        "the build calibrated on 100 photos and measured 99.0 % agreement on 100 held-out ones"
    )
    assert line in results_text(int8) and line in render(int8, {})
    assert "int8 (c)" not in results_text(summary()) and "int8 (c)" not in render(summary(), {})
