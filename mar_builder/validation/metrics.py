"""The figures of a validation run, computed from each photo's answers: pure functions, no I/O."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .photos import BadPhoto

SOURCES = ("eager", "pt", "served")  # (a), (b), (c)
REPORTED_TOPK = 5  # answers kept per photo and source: enough for top-5 and the report's top-3 lists
SHOWN_TOPK = 3  # the labels the report lists beside a disagreeing photo

Ranked = List[Tuple[int, float]]  # (class index, probability), most likely first


@dataclass(frozen=True)
class PhotoAnswers:
    """What (a), (b) and (c) answered for one photo."""

    name: str  # the photo as the data folder names it
    path: Path  # the file, for the report's thumbnail
    target: int  # index of its true label in class_names
    eager: Ranked  # (a): its top REPORTED_TOPK
    pt: Ranked  # (b)
    served: Ranked  # (c); empty when the server refused the photo
    served_error: str | None  # the server's status and message when it refused the photo
    pt_difference: float  # largest |p_pt - p_eager| over all classes
    served_difference: float | None  # largest |p_served - p_eager| over all classes; None when refused
    exif_rotated: bool  # its EXIF orientation turns it: the handler applies it, ImageFolder's loader does not

    def ranked(self, source: str) -> Ranked:
        return getattr(self, source)

    def top1(self, source: str) -> int | None:
        ranked = self.ranked(source)
        return ranked[0][0] if ranked else None


def summarize(
    answers: Sequence[PhotoAnswers], bad: Sequence[BadPhoto], class_names: Sequence[str], min_agreement: float
) -> Dict[str, Any]:
    """summary.json's content. Accuracies and agreements are fractions of the measured photos (a photo
    the server refused counts as wrong for (c)); probability differences are each photo's largest
    |p - p_eager| over all classes, then their largest and mean over the photos."""
    n = len(answers)

    def fraction(count: int) -> float:
        return count / n if n else 0.0

    top1 = {s: fraction(sum(a.top1(s) == a.target for a in answers)) for s in SOURCES}
    top5 = {s: fraction(sum(a.target in [i for i, _ in a.ranked(s)[:5]] for a in answers)) for s in SOURCES}
    agreement = {s: fraction(sum(a.top1(s) == a.top1("eager") for a in answers)) for s in ("pt", "served")}
    differences = {
        "pt": [a.pt_difference for a in answers],
        "served": [a.served_difference for a in answers if a.served_difference is not None],
    }
    return {
        "photos": n,
        "top1": top1,
        "top5": top5,
        "agreement_top1": agreement,
        "probability_difference": {
            s: {"max": max(d, default=0.0), "mean": sum(d) / len(d) if d else 0.0} for s, d in differences.items()
        },
        "min_agreement_served": min_agreement,
        "passed": n > 0 and agreement["served"] >= min_agreement,
        "served_refused": sum(a.served_error is not None for a in answers),
        "exif_rotated": sum(a.exif_rotated for a in answers),
        "skipped": {
            "unknown_label": sum(b.kind == "unknown label" for b in bad),
            "unreadable": sum(b.kind == "unreadable" for b in bad),
        },
        "per_class": per_class(answers, class_names),
        "disagreements": {
            s: [disagreement(a, s, class_names) for a in answers if differs(a, s)] for s in ("served", "pt")
        },
        "bad_photos": [{"file": b.name, "label": b.label, "kind": b.kind, "message": b.message} for b in bad],
    }


def int8_versus_fp32(answers: Sequence[PhotoAnswers], handler_settings: Mapping[str, Any]) -> Dict[str, Any]:
    """An int8 archive's served answers (c) against its fp32 .pt (b) on the same photos, beside what its
    build measured (model-config.yaml's handler settings, written by build --precision int8)."""
    n = len(answers)
    same = sum(a.top1("served") == a.top1("pt") for a in answers)
    right = {s: sum(a.top1(s) == a.target for a in answers) for s in ("pt", "served")}
    return {
        "agreement_top1": same / n if n else 0.0,
        "top1_change_points": 100 * (right["served"] - right["pt"]) / n if n else 0.0,
        "build": {
            key: handler_settings.get(key)
            for key in ("calibration_photos", "held_out_photos", "held_out_agreement_top1")
        },
    }


def differs(answer: PhotoAnswers, source: str) -> bool:
    return answer.top1(source) != answer.top1("eager")


def per_class(answers: Sequence[PhotoAnswers], class_names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per true label: its photos and the top-1 accuracy of each source on them (only labels with photos)."""
    grouped: Dict[int, List[PhotoAnswers]] = {}
    for a in answers:
        grouped.setdefault(a.target, []).append(a)
    return {
        class_names[target]: {
            "photos": len(group),
            "top1": {s: sum(a.top1(s) == target for a in group) / len(group) for s in SOURCES},
        }
        for target, group in sorted(grouped.items(), key=lambda item: class_names[item[0]])
    }


def disagreement(answer: PhotoAnswers, source: str, class_names: Sequence[str]) -> Dict[str, Any]:
    """One photo whose top-1 from `source` differs from the eager one: both top-3 lists as [label, probability]."""
    return {
        "file": answer.name,
        "label": class_names[answer.target],
        "eager": [[class_names[i], p] for i, p in answer.eager[:SHOWN_TOPK]],
        source: [[class_names[i], p] for i, p in answer.ranked(source)[:SHOWN_TOPK]],
        "exif_rotated": answer.exif_rotated,
        **({"error": answer.served_error} if source == "served" and answer.served_error else {}),
    }
