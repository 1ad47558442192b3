"""validation/photos.py: labelled photos from an ImageFolder tree or a labels CSV, and unknown labels."""

import pytest

from mar_builder.errors import ValidationError
from mar_builder.validation.photos import LabelledPhoto, photos_from_csv, photos_from_folder, split_by_label


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_folder_layout_gives_each_file_its_folder_name_as_label(tmp_path):
    for name in ["cat/a.jpg", "cat/sub/b.png", "dog/c.jpg", "dog/.hidden.jpg", ".cache/d.jpg", "notes.txt"]:
        touch(tmp_path / name)
    photos = photos_from_folder(tmp_path)
    assert [(p.name, p.label) for p in photos] == [("cat/a.jpg", "cat"), ("cat/sub/b.png", "cat"), ("dog/c.jpg", "dog")]
    assert photos[0].path == tmp_path / "cat" / "a.jpg"


def test_folder_without_class_subfolders_says_how_to_lay_it_out(tmp_path):
    touch(tmp_path / "a.jpg")
    with pytest.raises(ValidationError, match=r"no class subfolders; lay photos out as DIR/<class name>/<photo>"):
        photos_from_folder(tmp_path)
    with pytest.raises(ValidationError, match="not a folder"):
        photos_from_folder(tmp_path / "missing")


def test_csv_takes_the_chosen_label_column_and_is_found_in_the_data_folder(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "file,synset,class_index,torchvision_category\nx.JPEG,n01440764,0,tench\ny.JPEG,n01443537,1,goldfish\n"
    )
    photos = photos_from_csv(tmp_path, tmp_path / "labels.csv", "torchvision_category")
    assert [(p.name, p.label, p.path) for p in photos] == [
        ("x.JPEG", "tench", tmp_path / "x.JPEG"),
        ("y.JPEG", "goldfish", tmp_path / "y.JPEG"),
    ]
    # A relative name that is not in the current directory is looked up in the data folder.
    assert photos_from_csv(tmp_path, tmp_path.relative_to(tmp_path) / "labels.csv", "synset")[0].label == "n01440764"


def test_csv_without_the_label_column_names_its_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("file,synset\nx.jpg,n01440764\n")
    with pytest.raises(
        ValidationError, match=r"no column 'label'; its columns are \['file', 'synset'\].*--label-column"
    ):
        photos_from_csv(tmp_path, tmp_path / "labels.csv")
    with pytest.raises(ValidationError, match="missing.csv"):
        photos_from_csv(tmp_path, tmp_path / "missing.csv")


def test_unknown_labels_are_set_aside_with_the_closest_class_names(tmp_path):
    photos = [LabelledPhoto(tmp_path / label, label, f"{label}.jpg") for label in ["tabby", "Tabby cat", "volcano"]]
    known, unknown = split_by_label(photos, ["tabby", "tiger cat", "Egyptian cat"])
    assert [(p.label, i) for p, i in known] == [("tabby", 0)]
    assert [(b.name, b.kind) for b in unknown] == [("Tabby cat.jpg", "unknown label"), ("volcano.jpg", "unknown label")]
    assert unknown[0].message == "label 'Tabby cat' is not among the archive's 3 class_names; closest: 'tabby'"
    assert unknown[1].message == "label 'volcano' is not among the archive's 3 class_names"
