import json
import logging

import pytest
import torchvision
from PIL import Image

from mar_builder.errors import ClassNamesError
from mar_builder.model.class_names import class_names_from_dir, log_class_names, read_class_names, validate_class_names

NAMES = ["Eiffel Tower", "Big Ben", "Taj Mahal"]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_text_file_one_name_per_line(tmp_path):
    path = write(tmp_path / "classes.txt", "Eiffel Tower\nBig Ben\nTaj Mahal\n")
    assert read_class_names(path) == NAMES


def test_text_file_tolerates_crlf_bom_padding_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffEiffel Tower \r\n  Big Ben\r\nTaj Mahal\r\n\r\n\n".encode())
    assert read_class_names(path) == NAMES


def test_json_list(tmp_path):
    assert read_class_names(write(tmp_path / "classes.json", json.dumps(NAMES))) == NAMES


def test_json_list_is_recognized_without_a_json_suffix(tmp_path):
    assert read_class_names(write(tmp_path / "classes.txt", json.dumps(NAMES, indent=2))) == NAMES


def test_index_to_name_object_is_ordered_by_index(tmp_path):
    path = write(tmp_path / "index_to_name.json", json.dumps({"2": "Taj Mahal", "0": "Eiffel Tower", "1": "Big Ben"}))
    assert read_class_names(path) == NAMES


def test_torchserve_style_values_give_their_last_element(tmp_path):
    mapping = {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}
    assert read_class_names(write(tmp_path / "index_to_name.json", json.dumps(mapping))) == ["tench", "goldfish"]


def test_classes_from_dir_numbers_folders_exactly_as_image_folder(tmp_path):
    root = tmp_path / "train"
    for name in ["zebra", "ant", "Moth", "bee", "moth"]:  # sorted() puts upper case first
        (root / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / name / "0.png")
    (root / "README.txt").write_text("files are not classes")
    names = class_names_from_dir(root)
    assert names == ["Moth", "ant", "bee", "moth", "zebra"]
    dataset = torchvision.datasets.ImageFolder(str(root))
    assert names == dataset.classes
    assert all(dataset.class_to_idx[name] == i for i, name in enumerate(names))


@pytest.mark.parametrize(
    "filename, text, message",
    [
        ("classes.txt", "", r"classes.txt holds no class names"),
        ("classes.txt", "\n\n", r"classes.txt holds no class names"),
        ("classes.json", "[]", r"classes.json holds no class names"),
        ("classes.json", "{}", r"classes.json holds no class names"),
        ("classes.txt", "cat\ndog\ncat\n", r"duplicated class names: 'cat' \(classes 0 and 2\)"),
        (
            "classes.json",
            '["a", "b", "a", "b"]',
            r"duplicated class names: 'a' \(classes 0 and 2\), 'b' \(classes 1 and 3\)",
        ),
        ("classes.txt", "cat\n\ndog\n", r"classes.txt line 2 is blank"),
        ("classes.json", '["cat", "  "]', r"class 1 has a blank name"),
        ("classes.json", '["cat", 3]', r"class 1 is 3, not a string"),
        (
            "classes.json",
            '{"0": "cat", "2": "dog"}',
            r"the keys must be the indices 0\.\.1 with none left out; missing 1",
        ),
        ("classes.json", '{"0": "cat", "one": "dog"}', r"key 'one' is not a class index"),
        ("classes.json", '{"0": "cat", "-1": "dog"}', r"key '-1' is not a class index"),
        ("classes.json", '"cat"', r"holds a JSON str; expected a list or an object"),
        ("classes.json", "cat\ndog\n", r"classes.json is not valid JSON"),
    ],
)
def test_bad_class_lists_are_refused(tmp_path, filename, text, message):
    with pytest.raises(ClassNamesError, match=message):
        read_class_names(write(tmp_path / filename, text))


def test_missing_and_undecodable_files_are_refused(tmp_path):
    with pytest.raises(ClassNamesError, match=r"nope.txt: no such file"):
        read_class_names(tmp_path / "nope.txt")
    binary = tmp_path / "classes.txt"
    binary.write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(ClassNamesError, match=r"is not UTF-8 text"):
        read_class_names(binary)


def test_classes_from_dir_refuses_missing_and_empty_folders(tmp_path):
    with pytest.raises(ClassNamesError, match=r"missing does not exist"):
        class_names_from_dir(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("a file")
    with pytest.raises(ClassNamesError, match=r"file.txt is not a directory"):
        class_names_from_dir(tmp_path / "file.txt")
    (tmp_path / "only_files").mkdir()
    (tmp_path / "only_files" / "a.png").write_bytes(b"")
    with pytest.raises(ClassNamesError, match=r"only_files has no subfolders"):
        class_names_from_dir(tmp_path / "only_files")


def test_hidden_folders_are_counted_like_image_folder_does_with_a_warning(tmp_path, caplog):
    for name in [".ipynb_checkpoints", "cat", "dog"]:
        (tmp_path / name).mkdir()
    assert class_names_from_dir(tmp_path) == [".ipynb_checkpoints", "cat", "dog"]
    assert "ImageFolder counts hidden folders as classes too: .ipynb_checkpoints" in caplog.text


def test_validate_returns_a_list_and_names_its_source():
    assert validate_class_names(("a", "b"), "here") == ["a", "b"]
    with pytest.raises(ClassNamesError, match=r"class names: the list holds no class names"):
        validate_class_names([], "the list")


def test_torchserves_imagenet_index_to_name_with_two_cranes_gets_distinct_names(tmp_path, caplog):
    # As in TorchServe's own ImageNet index_to_name.json: classes 134 and 517 are both "crane".
    mapping = {str(i): [f"n{i:08d}", f"class {i}"] for i in range(1000)}
    mapping["134"], mapping["517"] = ["n02012849", "crane"], ["n03126707", "crane"]
    names = read_class_names(write(tmp_path / "index_to_name.json", json.dumps(mapping)))
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[134] == "crane (n02012849)" and names[517] == "crane (n03126707)"
    assert names[0] == "class 0" and names[999] == "class 999"
    assert "134: 'crane (n02012849)', 517: 'crane (n03126707)'" in caplog.text


def test_repeated_names_in_an_object_without_ids_get_their_index(tmp_path):
    path = write(tmp_path / "index_to_name.json", json.dumps({"0": "crane", "1": "heron", "2": "crane"}))
    assert read_class_names(path) == ["crane (0)", "heron", "crane (2)"]


def test_the_served_class_names_are_logged_first_and_last_in_index_order(caplog):
    caplog.set_level(logging.INFO, logger="mar_builder")
    log_class_names([f"c{i}" for i in range(10)])
    assert "serving 10 classes, in output order: 0: c0, 1: c1, 2: c2, ..., 7: c7, 8: c8, 9: c9" in caplog.text
    log_class_names(["b", "a"])
    assert "serving 2 classes, in output order: 0: b, 1: a" in caplog.text
