"""Calibration photos: any folder, decoded upright, preprocessed by the .pt, split in two; bad input refused."""

import logging

import numpy as np
import pytest
import torch
from calibration_data import CROP, small_pt, write_photos
from PIL import Image

from mar_builder.errors import SettingsError
from mar_builder.model.calibration_photos import decode_upright_rgb, image_files, load_calibration_split


@pytest.fixture
def pt(tmp_path):
    return torch.jit.load(str(small_pt(tmp_path / "small.pt"))).eval()


def test_every_second_photo_is_held_out_and_each_is_the_pt_own_preprocess(tmp_path, pt):
    photos = write_photos(tmp_path / "photos", 24)
    (photos / "labels.csv").write_text("file,label\n")  # not an image: left out, not counted as unreadable
    split = load_calibration_split(photos, pt)
    files = image_files(photos)
    assert len(files) == 24 and (len(split.calibration), len(split.held_out), split.unreadable) == (12, 12, 0)
    for i, crop in [(0, split.calibration[0]), (1, split.held_out[0]), (23, split.held_out[11])]:
        expected = pt.preprocess(decode_upright_rgb(files[i])).numpy()
        assert crop.shape == (3, CROP, CROP) and crop.dtype == np.float32 and np.array_equal(crop, expected)


def test_photos_are_decoded_upright_as_the_handler_serves_them(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # white on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 3  # shown rotated by 180 degrees: white on the right
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    image = decode_upright_rgb(tmp_path / "rotated.jpg")
    assert image.shape == (3, 10, 20) and image.dtype == torch.uint8
    assert image[:, :, -5:].float().mean() > 240 and image[:, :, :5].float().mean() < 15


def test_unreadable_photos_are_skipped_named_and_counted(tmp_path, pt, caplog):
    photos = write_photos(tmp_path / "photos", 21)
    (photos / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "b" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.INFO):
        split = load_calibration_split(photos, pt)
    assert split.unreadable == 2 and len(split.calibration) + len(split.held_out) == 21
    assert "a/broken.jpg is unreadable (UnidentifiedImageError" in caplog.text
    assert "21 photos (2 unreadable skipped): 11 to calibrate, 10 held out" in caplog.text


@pytest.mark.parametrize("count", [0, 19])
def test_too_few_photos_are_refused(tmp_path, pt, count):
    photos = write_photos(tmp_path / "photos", count) if count else tmp_path / "empty"
    photos.mkdir(exist_ok=True)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(
        SettingsError, match=rf"{count} readable photos \(1 unreadable skipped\); int8 needs at least 20"
    ):
        load_calibration_split(photos, pt)


def test_a_missing_folder_is_refused(tmp_path, pt):
    with pytest.raises(SettingsError, match=r"--calibration .*nowhere: not a folder"):
        load_calibration_split(tmp_path / "nowhere", pt)
