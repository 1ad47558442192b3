"""Write a validation run's summary.json (for CI) and report.html (self-contained: thumbnails embedded)."""

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from PIL import Image, ImageOps

from .metrics import SOURCES

THUMBNAIL_SIDE = 176  # pixels, the longer side of a disagreeing photo's thumbnail
ROTATED_NOTE = (
    "<div class=note>EXIF-rotated: shown upright, as the handler decodes it; "
    "ImageFolder's loader, and so (a) and (b), ignore the rotation</div>"
)
SOURCE_TITLES = {"eager": "(a) eager, PIL preprocessing", "pt": "(b) .pt as archived", "served": "(c) served"}
CARD_TITLES = {"eager": "(a) eager", "pt": "(b) .pt", "served": "(c) served"}

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1120px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 12px 0; }
.pass { background: #e3f4e1; color: #1d5e1a; } .fail { background: #fbe3e1; color: #8a1c12; }
.meta { color: #555; margin: 0; padding-left: 18px; } .meta li { margin: 2px 0; }
table { border-collapse: collapse; } th, td { padding: 4px 10px; border-bottom: 1px solid #e2e2e2; }
th { text-align: left; background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.card { display: flex; gap: 12px; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
.card img { width: 176px; height: 176px; object-fit: contain; background: #f4f4f4; flex: none; }
.card .file { font-weight: 600; word-break: break-all; } .card .truth { color: #555; margin-bottom: 6px; }
.lists { display: flex; gap: 14px; } .lists ol { margin: 2px 0 0; padding-left: 20px; }
.lists .head { font-size: 12px; color: #666; } .right { color: #1d5e1a; font-weight: 600; }
tr.differs { background: #fff6d6; } .error { color: #8a1c12; } .none { color: #555; }
.note { font-size: 12px; color: #8a5a00; margin-bottom: 6px; }
"""


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def write_html(out: Path, summary: Mapping[str, Any], photo_paths: Mapping[str, Path]) -> Path:
    """report.html; `photo_paths` maps each photo's name in the summary to its file, for thumbnails."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(render(summary, photo_paths), encoding="utf-8")
    return path


def render(summary: Mapping[str, Any], photo_paths: Mapping[str, Path]) -> str:
    e = html.escape
    run = summary["run"]
    agreement = summary["agreement_top1"]["served"]
    verdict = "pass" if summary["passed"] else "fail"
    parts: List[str] = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>validate {e(run['archive'])}</title><style>{STYLE}</style><body>",
        f"<h1>{e(Path(run['archive']).name)} on {summary['photos']} labelled photos</h1>",
        f"<div class='verdict {verdict}'>{verdict.upper()}: the served top-1 agrees with the eager top-1 on "
        f"{percent(agreement)} of the photos (threshold {percent(summary['min_agreement_served'])})</div>",
        "<ul class=meta>",
        f"<li>archive: {e(run['archive'])}; photos: {e(run['data'])}</li>",
        f"<li>(a) {e(run['eager'])}</li>",
        f"<li>(c) {e(run['served'])}</li>",
        *([f"<li><b>{e(int8_line(summary))}</b></li>"] if "int8_vs_fp32" in summary else []),
        f"<li>preprocessing from the .pt: {e(run['preprocessing'])}</li>",
        f"<li>{e(skipped_line(summary))}</li>",
        "</ul>",
        "<h2>Figures</h2>",
        figures_table(summary),
        f"<h2>Served top-1 differs from eager: {photos(len(summary['disagreements']['served']))}</h2>",
        cards(summary["disagreements"]["served"], "served", photo_paths),
        f"<h2>.pt top-1 differs from eager: {photos(len(summary['disagreements']['pt']))}</h2>",
        cards(summary["disagreements"]["pt"], "pt", photo_paths),
    ]
    if summary["bad_photos"]:
        rows = "".join(
            f"<tr><td>{e(b['file'])}</td><td>{e(b['kind'])}</td><td>{e(b['message'])}</td></tr>"
            for b in summary["bad_photos"]
        )
        parts.append(f"<h2>Skipped photos</h2><table><tr><th>photo</th><th>why</th><th>message</th></tr>{rows}</table>")
    parts += [
        f"<h2>Per-class top-1 accuracy ({len(summary['per_class'])} classes, lowest first; "
        "highlighted where the sources differ)</h2>",
        per_class_table(summary["per_class"]),
    ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def photos(n: int) -> str:
    return f"{n} photo" if n == 1 else f"{n} photos"


def skipped_line(summary: Mapping[str, Any]) -> str:
    skipped = summary["skipped"]
    return (
        f"skipped: {photos(skipped['unknown_label'])} with a label not among class_names, "
        f"{skipped['unreadable']} unreadable; the server refused {summary['served_refused']}; "
        f"{photos(summary['exif_rotated'])} with an EXIF rotation (the handler applies it, ImageFolder does not)"
    )


def int8_line(summary: Mapping[str, Any]) -> str:
    """An int8 archive: its served top-1 against its fp32 .pt's here, and what its build measured."""
    int8 = summary["int8_vs_fp32"]
    build = int8["build"]
    return (
        f"int8 (c) against fp32 (b): the same top-1 on {percent(int8['agreement_top1'])} of these photos, "
        f"top-1 accuracy {int8['top1_change_points']:+.1f} points; the build calibrated on "
        f"{build['calibration_photos']} photos and measured {percent(build['held_out_agreement_top1'] or 0.0)} "
        f"agreement on {build['held_out_photos']} held-out ones"
    )


def figures_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for source in SOURCES:
        if source == "eager":
            agreement, largest, mean = "", "", ""
        else:
            agreement = percent(summary["agreement_top1"][source])
            difference = summary["probability_difference"][source]
            largest, mean = f"{difference['max']:.4f}", f"{difference['mean']:.4f}"
        rows.append(
            f"<tr><td>{SOURCE_TITLES[source]}</td><td class=num>{percent(summary['top1'][source])}</td>"
            f"<td class=num>{percent(summary['top5'][source])}</td><td class=num>{agreement}</td>"
            f"<td class=num>{largest}</td><td class=num>{mean}</td></tr>"
        )
    head = (
        "<tr><th></th><th>top-1</th><th>top-5</th><th>top-1 agrees with (a)</th>"
        "<th>largest prob. difference</th><th>mean prob. difference</th></tr>"
    )
    note = (
        "<p class=none>Probability difference: each photo's largest |p - p<sub>eager</sub>| over all classes; "
        "the largest and the mean of these over the photos.</p>"
    )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def cards(disagreements: Sequence[Mapping[str, Any]], source: str, photo_paths: Mapping[str, Path]) -> str:
    if not disagreements:
        return "<p class=none>None: every photo has the same top-1.</p>"
    items = []
    for d in disagreements:
        label = d["label"]
        other = (
            f"<span class=error>{html.escape(d['error'])}</span>" if d.get("error") else ranked_list(d[source], label)
        )
        items.append(
            f"<div class=card>{thumbnail(photo_paths.get(d['file']))}<div>"
            f"<div class=file>{html.escape(d['file'])}</div><div class=truth>true label: {html.escape(label)}</div>"
            f"{ROTATED_NOTE if d.get('exif_rotated') else ''}"
            f"<div class=lists><div><div class=head>{CARD_TITLES['eager']}</div>"
            f"{ranked_list(d['eager'], label)}</div>"
            f"<div><div class=head>{CARD_TITLES[source]}</div>{other}</div></div></div></div>"
        )
    return f"<div class=cards>{''.join(items)}</div>"


def ranked_list(ranked: Sequence[Sequence[Any]], truth: str) -> str:
    entries = "".join(
        f"<li{' class=right' if name == truth else ''}>{html.escape(name)} {probability:.3f}</li>"
        for name, probability in ranked
    )
    return f"<ol>{entries}</ol>"


def thumbnail(path: Path | None) -> str:
    """An <img> with the photo embedded as a small JPEG data URL; a grey box if it cannot be read."""
    if path is None:
        return "<img alt='(no file)'>"
    try:
        with Image.open(path) as image:
            small = ImageOps.exif_transpose(image).convert("RGB")
            small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
    except Exception:
        return "<img alt='(unreadable)'>"
    return f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def per_class_table(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    def rank(item: Tuple[str, Mapping[str, Any]]) -> Tuple[float, float, float, str]:
        # The lowest accuracy of any source first: a class where the sources differ comes early.
        name, c = item
        return (min(c["top1"].values()), c["top1"]["served"], c["top1"]["eager"], name.casefold())

    ordered = sorted(per_class.items(), key=rank)
    rows = "".join(
        f"<tr{' class=differs' if len(set(c['top1'].values())) > 1 else ''}>"
        f"<td>{html.escape(name)}</td><td class=num>{c['photos']}</td>"
        + "".join(f"<td class=num>{percent(c['top1'][s])}</td>" for s in SOURCES)
        + "</tr>"
        for name, c in ordered
    )
    head = "<tr><th>class</th><th>photos</th>" + "".join(f"<th>{SOURCE_TITLES[s]}</th>" for s in SOURCES) + "</tr>"
    return f"<table>{head}{rows}</table>"


def results_text(summary: Mapping[str, Any]) -> str:
    """The figures as a few lines of text, for the terminal."""
    lines = [f"{'':32} {'top-1':>7} {'top-5':>7} {'agrees':>7} {'largest':>8} {'mean':>8}  (probability difference)"]
    for source in SOURCES:
        cells = [percent(summary["top1"][source]), percent(summary["top5"][source])]
        if source == "eager":
            cells += ["", "", ""]
        else:
            difference = summary["probability_difference"][source]
            cells += [
                percent(summary["agreement_top1"][source]),
                f"{difference['max']:.4f}",
                f"{difference['mean']:.4f}",
            ]
        row = f"{SOURCE_TITLES[source]:32} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7} {cells[3]:>8} {cells[4]:>8}"
        lines.append(row.rstrip())
    lines.append(skipped_line(summary))
    if "int8_vs_fp32" in summary:
        lines.append(int8_line(summary))
    for d in summary["disagreements"]["served"]:
        served = d.get("error") or f"{d['served'][0][0]} {d['served'][0][1]:.3f}"
        eager = f"{d['eager'][0][0]} {d['eager'][0][1]:.3f}"
        lines.append(f"  served differs: {d['file']} (label {d['label']}): eager {eager}, served {served}")
    return "\n".join(lines)


def run_description(archive: Path, data: str, eager: str, served: str, preprocessing: str) -> Dict[str, str]:
    return {"archive": str(archive), "data": data, "eager": eager, "served": served, "preprocessing": preprocessing}
