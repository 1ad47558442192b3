"""validation/metrics.py: top-1, top-5, agreement, probability differences, per-class, disagreements."""

from pathlib import Path

import pytest

from mar_builder.validation.metrics import PhotoAnswers, summarize
from mar_builder.validation.photos import BadPhoto

NAMES = ["cat", "dog", "fox", "owl", "bee", "ant"]


def answers(name, target, eager, pt, served, pt_difference=0.01, served_difference=0.02, error=None):
    """Each ranking is a list of class indices, most likely first, with made-up falling probabilities."""

    def ranked(indices):
        return [(i, 0.5 / (rank + 1)) for rank, i in enumerate(indices)]

    return PhotoAnswers(
        name=name,
        path=Path(name),
        target=target,
        eager=ranked(eager),
        pt=ranked(pt),
        served=ranked(served),
        served_error=error,
        pt_difference=pt_difference,
        served_difference=None if error else served_difference,
        exif_rotated=False,
    )


def test_figures_are_fractions_of_the_measured_photos():
    photos = [
        # right everywhere
        answers("a.jpg", 0, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], 0.01, 0.03),
        # eager and .pt wrong at top-1 but right in the top-5; served differs from eager at top-1
        answers("b.jpg", 1, [2, 1, 0, 3, 4], [2, 1, 0, 3, 4], [1, 2, 0, 3, 4], 0.02, 0.20),
        # wrong everywhere, the truth (5) outside every top-5
        answers("c.jpg", 5, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], 0.03, 0.01),
        # the server refused it: wrong for (c) and not in agreement
        answers("d.jpg", 3, [3, 0, 1, 2, 4], [3, 0, 1, 2, 4], [], 0.06, error="the server answered 400 InvalidImage"),
    ]
    bad = [BadPhoto("e.jpg", "zebra", "unknown label", "..."), BadPhoto("f.jpg", "cat", "unreadable", "...")]
    summary = summarize(photos, bad, NAMES, min_agreement=0.99)
    assert summary["photos"] == 4
    assert summary["top1"] == {"eager": 0.5, "pt": 0.5, "served": 0.5}
    assert summary["top5"] == {"eager": 0.75, "pt": 0.75, "served": 0.5}
    assert summary["agreement_top1"] == {"pt": 1.0, "served": 0.5}
    assert summary["probability_difference"]["pt"] == pytest.approx({"max": 0.06, "mean": 0.03})
    assert summary["probability_difference"]["served"] == pytest.approx({"max": 0.20, "mean": 0.08})
    assert summary["passed"] is False and summary["served_refused"] == 1
    assert summary["skipped"] == {"unknown_label": 1, "unreadable": 1}
    assert summary["per_class"]["dog"] == {"photos": 1, "top1": {"eager": 0.0, "pt": 0.0, "served": 1.0}}
    assert list(summary["per_class"]) == ["ant", "cat", "dog", "owl"]  # only labels with photos, sorted
    served = summary["disagreements"]["served"]
    assert [d["file"] for d in served] == ["b.jpg", "d.jpg"]
    assert served[0]["eager"] == [["fox", 0.5], ["dog", 0.25], ["cat", pytest.approx(0.5 / 3)]]
    assert served[0]["served"][0] == ["dog", 0.5] and served[0]["label"] == "dog"
    assert served[1]["error"] == "the server answered 400 InvalidImage" and served[1]["served"] == []
    assert summary["disagreements"]["pt"] == []
    assert [b["kind"] for b in summary["bad_photos"]] == ["unknown label", "unreadable"]


def test_the_threshold_is_met_at_equality():
    photos = [answers(f"{i}.jpg", 0, [0, 1], [0, 1], [0, 1] if i else [1, 0]) for i in range(4)]
    assert summarize(photos, [], NAMES, min_agreement=0.75)["passed"] is True
    assert summarize(photos, [], NAMES, min_agreement=0.76)["passed"] is False


def test_an_int8_archive_is_compared_with_its_fp32_pt_beside_what_its_build_measured():
    from mar_builder.validation.metrics import int8_versus_fp32

    photos = [
        answers("a.jpg", 0, [0, 1], [0, 1], [0, 1]),  # int8 right, as fp32
        answers("b.jpg", 1, [1, 0], [1, 0], [0, 1]),  # int8 changes a right answer
        answers("c.jpg", 2, [0, 2], [0, 2], [0, 2]),  # both wrong, the same way
        answers("d.jpg", 3, [3, 0], [0, 3], [3, 0]),  # int8 fixes a wrong .pt answer
    ]
    recorded = {"calibration_photos": 100, "held_out_photos": 100, "held_out_agreement_top1": 0.99, "topk": 5}
    assert int8_versus_fp32(photos, recorded) == {
        "agreement_top1": 0.5,  # b and d differ from the .pt
        "top1_change_points": 0.0,  # one lost, one gained
        "build": {"calibration_photos": 100, "held_out_photos": 100, "held_out_agreement_top1": 0.99},
    }
