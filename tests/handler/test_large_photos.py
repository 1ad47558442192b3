"""A 12-megapixel JPEG is decoded at reduced scale; its answer must stay close to a full-resolution decode."""

import io
import zipfile

import pytest
from image_variants import SAMPLES
from PIL import Image

from benchmarks.in_process import load_handler
from benchmarks.large_photos import draft_tradeoffs, jpeg_of, reduced_vs_full_decode

# The target: within 0.02 of a full-resolution decode. Measured at the default jpeg_draft_factor 4
# (decode at 1/2 scale, 2124x1413 for these photos): 0.0003 to 0.0195.
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def default_pt(model_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("default_pt")
    with zipfile.ZipFile(model_store / "classifier.mar") as archive:
        archive.extract("classifier.pt", folder)
    return folder / "classifier.pt"


@pytest.fixture(scope="module")
def default_handler(default_pt):
    return load_handler(default_pt)


@pytest.mark.parametrize("photo", ["chelsea.png", "coffee.png", "rocket.jpg"])
def test_12_megapixel_jpeg_answers_like_a_full_resolution_decode(default_handler, photo):
    handler, context = default_handler
    jpeg = jpeg_of(Image.open(SAMPLES / photo), megapixels=12)
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.width * image.height > 11_500_000
    assert handler.decode_min_side == 4 * 256  # the archived default: drafted, not decoded in full
    same_top1, difference, margin, answer = reduced_vs_full_decode(handler, context, jpeg)
    assert difference < TOLERANCE, (difference, answer)
    # A top-1 whose lead at full resolution is within the tolerance is a tie, not a verdict.
    assert same_top1 or margin < TOLERANCE, (margin, answer)


def test_the_benchmark_compares_each_draft_factor_with_a_full_resolution_decode(default_pt):
    jpeg = jpeg_of(Image.open(SAMPLES / "coffee.png"), megapixels=12)
    with Image.open(io.BytesIO(jpeg)) as image:
        width, height = image.size
    full, quarter = draft_tradeoffs(default_pt, [jpeg], factors=(0, 2), rounds=1)
    # Factor 0 decodes as the reference does (only float rounding differs); factor 2 decodes at 1/4
    # scale, which libjpeg rounds up.
    assert (full.factor, full.decoded_size, full.same_top1) == (0, f"{width}x{height}", 1)
    assert full.difference < 1e-4
    assert quarter.decoded_size == f"{-(-width // 4)}x{-(-height // 4)}"
    assert 0 < quarter.difference < 0.03 and quarter.same_top1 == 1
    assert all(t.decode_ms > 0 and t.handle_ms > 0 for t in (full, quarter))  # times are reported, not judged
