"""The labelled photos to validate on: an ImageFolder tree or a labels CSV, checked against class_names."""

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..errors import ValidationError

FILE_COLUMN = "file"
DEFAULT_LABEL_COLUMN = "label"


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path  # the photo file (it may be missing or unreadable: that is found out when it is read)
    label: str  # its true class name, from its folder or the CSV
    name: str  # how reports show it: the path relative to the data folder


@dataclass(frozen=True)
class BadPhoto:
    name: str  # as in LabelledPhoto
    label: str  # its true class name as given
    kind: str  # "unknown label" or "unreadable"
    message: str  # one line: what is wrong and what to fix


def photos_from_folder(data: Path) -> List[LabelledPhoto]:
    """Every file in DIR/<class name>/ (hidden files aside), as torchvision's ImageFolder lays them out.

    Raises ValidationError when `data` is not a folder or has no class subfolders.
    """
    if not data.is_dir():
        raise ValidationError(f"--data {data}: not a folder")
    classes = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValidationError(
            f"--data {data}: no class subfolders; lay photos out as DIR/<class name>/<photo> "
            "or name them in --labels-csv FILE"
        )
    photos = []
    for folder in classes:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
                photos.append(LabelledPhoto(path, folder.name, str(path.relative_to(data))))
    return photos


def photos_from_csv(data: Path, labels_csv: Path, label_column: str = DEFAULT_LABEL_COLUMN) -> List[LabelledPhoto]:
    """The rows of a CSV with a `file` column (relative to `data`) and a label column.

    Raises ValidationError when the CSV is missing, has no such columns or no rows.
    """
    if not data.is_dir():
        raise ValidationError(f"--data {data}: not a folder")
    if not labels_csv.is_file() and not labels_csv.is_absolute() and (data / labels_csv).is_file():
        labels_csv = data / labels_csv
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as e:
        raise ValidationError(f"--labels-csv {labels_csv}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValidationError(f"--labels-csv {labels_csv}: not a UTF-8 CSV file ({e})") from None
    missing = [c for c in (FILE_COLUMN, label_column) if c not in columns]
    if missing:
        raise ValidationError(
            f"--labels-csv {labels_csv}: no column {', '.join(map(repr, missing))}; its columns are {columns} "
            "(choose the label column with --label-column)"
        )
    photos = [
        LabelledPhoto(data / row[FILE_COLUMN], (row[label_column] or "").strip(), row[FILE_COLUMN])
        for row in rows
        if (row.get(FILE_COLUMN) or "").strip()
    ]
    if not photos:
        raise ValidationError(f"--labels-csv {labels_csv}: no rows")
    return photos


def split_by_label(
    photos: Sequence[LabelledPhoto], class_names: Sequence[str]
) -> Tuple[List[Tuple[LabelledPhoto, int]], List[BadPhoto]]:
    """Photos whose label is a class name, with its index; the others as BadPhoto ("unknown label")."""
    index: Dict[str, int] = {name: i for i, name in enumerate(class_names)}
    lowered = {name.lower(): name for name in class_names}
    known, unknown = [], []
    for photo in photos:
        if photo.label in index:
            known.append((photo, index[photo.label]))
            continue
        close = [lowered[c] for c in difflib.get_close_matches(photo.label.lower(), list(lowered), n=3)]
        hint = f"; closest: {', '.join(map(repr, close))}" if close else ""
        message = f"label {photo.label!r} is not among the archive's {len(class_names)} class_names{hint}"
        unknown.append(BadPhoto(photo.name, photo.label, "unknown label", message))
    return known, unknown
