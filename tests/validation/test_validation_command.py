"""validate's refusals: each one line on stderr and exit 1, before any server starts."""

import pytest
from user_model_files import run
from validation_data import build_archive, write_photos


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    return write_photos(root / "photos"), build_archive(root)


def test_a_threshold_given_as_a_percentage_is_refused(archive, capsys):
    data, mar = archive
    code, err = run(["validate", "--data", data, "--mar", mar, "--min-agreement", "99"], capsys)
    assert code == 1
    assert err == "error: --min-agreement is a fraction between 0 and 1 (0.99 = 99 %), got 99.0\n"


def test_a_missing_archive_says_how_to_build_one(archive, tmp_path, capsys):
    data, _ = archive
    code, err = run(["validate", "--data", data, "--mar", tmp_path / "gone.mar"], capsys)
    assert code == 1 and err.endswith("gone.mar: no such file; build one with ./build_mar.sh\n")


def test_photos_without_a_single_known_label_say_which_names_fit(archive, tmp_path, capsys):
    _, mar = archive
    (tmp_path / "labels.csv").write_text("file,label\na.jpg,scarlet\nb.jpg,navy\n")
    code, err = run(["validate", "--data", tmp_path, "--mar", mar, "--labels-csv", tmp_path / "labels.csv"], capsys)
    assert code == 1
    assert err == (
        "error: none of the 2 photos has a label among the archive's class_names (such as 'red'): "
        "name the class folders after them, or pick the --label-column\n"
    )


def test_the_default_model_is_refused_for_an_archive_of_other_classes(archive, capsys):
    data, mar = archive
    code, err = run(["validate", "--data", data, "--mar", mar, "--default-model"], capsys)
    assert code == 1
    assert "--default-model: the archive's class_names are not the 1000 ImageNet labels" in err
