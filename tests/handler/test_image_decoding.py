import io
import re
import subprocess
import sys

import image_decoding
import jpeg_decoding
import numpy as np
import pytest
import torch
from image_decoding import DEFAULT_MAX_PIXELS, decode_image
from image_fuzz import mutations
from image_variants import SAMPLES, all_variants, encode, exif_rotated_jpeg, sample
from PIL import Image
from request_errors import ImageTooLarge, InvalidImage

from mar_builder.constants import REPO_ROOT
from mar_builder.server.soak import png_header

CAT = sample("chelsea.png")  # 451x300


def mean_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


@pytest.mark.parametrize("name", sorted(all_variants(CAT.resize((64, 48)))))
def test_every_format_and_mode_decodes_to_upright_rgb_uint8(name):
    small = CAT.resize((64, 48))
    decoded = decode_image(all_variants(small)[name])
    assert decoded.dtype == torch.uint8
    assert decoded.shape == (3, 48, 64)  # upright: height 48, width 64
    reference = torch.from_numpy(np.array(small)).permute(2, 0, 1)
    gray = torch.from_numpy(np.array(small.convert("L")))
    # Lossy and palette encodings wobble; a wrong orientation, channel order or bit depth does not.
    close_to_color = mean_abs_difference(decoded, reference) < 12
    close_to_gray = all(mean_abs_difference(decoded[c], gray) < 6 for c in range(3))
    assert close_to_color or close_to_gray, name


def test_exif_orientation_is_applied():
    upright = decode_image(encode(CAT, "JPEG", quality=95))
    rotated = decode_image(exif_rotated_jpeg(CAT))
    assert rotated.shape == upright.shape == (3, 300, 451)
    assert mean_abs_difference(rotated, upright) < 3


def test_16bit_grayscale_is_scaled_not_clipped():
    values = np.full((10, 12), 40000, dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(values), "PNG"))
    assert decoded.shape == (3, 10, 12)
    assert int(decoded[0, 0, 0]) == 40000 >> 8


def test_orientation_tag_outside_1_to_8_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 42
    decoded = decode_image(encode(CAT, "JPEG", exif=exif))
    assert decoded.shape == (3, 300, 451)


def test_jpeg_is_drafted_but_never_below_min_side():
    big = CAT.resize((2400, 1600))
    data = encode(big, "JPEG", quality=90)
    full = decode_image(data)
    drafted = decode_image(data, min_side=512)
    assert full.shape == (3, 1600, 2400)
    assert drafted.shape == (3, 800, 1200)  # 1/2 scale keeps the short side >= 512; 1/4 would not


def test_animated_gif_and_multipage_tiff_use_the_first_frame():
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    gif, tiff = io.BytesIO(), io.BytesIO()
    red.save(gif, "GIF", save_all=True, append_images=[blue])
    red.save(tiff, "TIFF", save_all=True, append_images=[blue])
    for data in (gif.getvalue(), tiff.getvalue()):
        decoded = decode_image(data)
        assert decoded[:, 0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("width, height", [(30000, 30000), (8000, 6000)])
def test_too_many_pixels_is_refused_from_the_header(width, height):
    with pytest.raises(ImageTooLarge, match=f"image (is {width}x{height} = |declares ){width * height} pixels"):
        decode_image(png_header(width, height))


def test_pixel_limit_is_configurable():
    data = encode(CAT, "PNG")
    with pytest.raises(ImageTooLarge, match="451x300 = 135300 pixels; the limit is 100000"):
        decode_image(data, max_pixels=100_000)
    assert DEFAULT_MAX_PIXELS == 40_000_000


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty body"),
        (b"hello world", r"not a decodable image \(first bytes 68 65 6c 6c\); supported: JPEG, PNG"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", r"^SVG is not supported \(first bytes 3c 73 76 67\)"),
        (encode(CAT, "PNG")[:20], "damaged PNG header"),
        (encode(CAT, "JPEG")[:2000], "damaged JPEG image 451x300"),
        (encode(CAT, "PNG")[:3000], "damaged PNG image 451x300"),
    ],
)
def test_bad_bytes_raise_invalid_image(data, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(data)


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(InvalidImage, match="aspect ratios beyond 200:1"):
        decode_image(encode(Image.new("RGB", (4020, 20)), "PNG"))
    assert decode_image(encode(Image.new("RGB", (4000, 50)), "PNG")).shape == (3, 50, 4000)


def test_zero_width_png_is_refused_with_its_size():
    with pytest.raises(InvalidImage, match=r"^image has no pixels \(0x300\)$"):
        decode_image(png_header(0, 300))


BOMB_PEAK_RSS = """
import resource, sys
sys.path[:0] = sys.argv[1:3]
from bad_inputs import png_bomb
from image_decoding import decode_image
from request_errors import ImageTooLarge
bomb = png_bomb()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(bomb)
except ImageTooLarge as e:
    print(len(bomb), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, e)
"""


def test_png_bomb_is_refused_without_allocating_its_pixels():
    """A 30000x30000 PNG of about 110 KB would take 900 MB decoded; refusing it must cost ~nothing."""
    out = subprocess.run(
        [sys.executable, "-c", BOMB_PEAK_RSS, str(REPO_ROOT / "handler"), str(REPO_ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    size, peak_growth_kb, message = out.stdout.split(" ", 2)
    assert int(size) < 200_000
    assert int(peak_growth_kb) < 20_000  # under 20 MB of new peak memory, against 900 MB of pixels
    assert message.startswith("image declares 900000000 pixels; the limit is 40000000")


def test_fuzzed_images_give_a_tensor_or_a_typed_error():
    outcomes = {"decoded": 0, "InvalidImage": 0, "ImageTooLarge": 0}
    for name, data in mutations(2000, seed=1234):
        try:
            image = decode_image(data, min_side=64)
        except (InvalidImage, ImageTooLarge) as error:
            outcomes[type(error).__name__] += 1
            assert str(error), name
            continue
        except Exception as error:  # anything else would reach TorchServe as a 500
            pytest.fail(f"{name}: {type(error).__name__}: {error}")
        assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3, name
        outcomes["decoded"] += 1
    # The mutations really exercise both paths: some still decode, many are refused.
    assert outcomes["decoded"] > 200 and outcomes["InvalidImage"] > 500, outcomes


TRAILING_MARKERS = {
    "baseline JPEG": (encode(CAT, "JPEG", quality=90), 2),  # FF D9
    "progressive JPEG": (encode(CAT, "JPEG", quality=90, progressive=True), 2),
    "grayscale JPEG": (encode(CAT.convert("L"), "JPEG"), 2),
    "PNG": (encode(CAT, "PNG"), 12),  # the IEND chunk
    "GIF": (encode(CAT.convert("P"), "GIF"), 1),  # the trailer, 3B
}


@pytest.mark.parametrize("name", sorted(TRAILING_MARKERS))
@pytest.mark.parametrize("min_side", [None, 224])
def test_a_missing_trailing_marker_is_accepted_and_missing_pixel_data_refused(name, min_side):
    data, marker = TRAILING_MARKERS[name]
    complete = decode_image(data, min_side=min_side)
    assert torch.equal(decode_image(data[:-marker], min_side=min_side), complete)
    # Cut further, anywhere in the last 200 bytes or every 977 bytes: never a partly filled image.
    # Only bytes after the last pixel (a PNG's zlib checksum and IDAT CRC, a GIF's block terminator)
    # may go; a JPEG's last scan byte already holds pixel bits.
    accepted = []
    for cut in list(range(len(data) - 200, len(data) - marker)) + list(range(1000, len(data) - 200, 977)):
        try:
            decoded = decode_image(data[:cut], min_side=min_side)
        except InvalidImage as error:
            assert re.match(r"damaged \w+ (image 451x300|header)", str(error)), str(error)
            continue
        assert torch.equal(decoded, complete), f"{name} cut to {cut} of {len(data)} bytes: a partial image"
        accepted.append(len(data) - cut)
    assert max(accepted, default=0) <= 22 and ("JPEG" not in name or not accepted), accepted


def test_a_jpeg_cut_between_the_two_bytes_of_its_end_marker_is_accepted():
    data, _ = TRAILING_MARKERS["baseline JPEG"]
    assert torch.equal(decode_image(data[:-1]), decode_image(data))


# The JPEG fast path (simplejpeg) must give exactly the pixels of the Pillow path it replaces.
IMAGENET_SAMPLE = REPO_ROOT.parent / "shared" / "imagenet-sample"


def pillow_path(monkeypatch, data: bytes, min_side: int | None) -> torch.Tensor:
    """decode_image as it is without simplejpeg: Pillow decodes."""
    with monkeypatch.context() as patch:
        patch.setattr(jpeg_decoding, "_simplejpeg", lambda: None)
        return decode_image(data, min_side=min_side)


def fast_path(monkeypatch, data: bytes, min_side: int | None) -> torch.Tensor:
    """decode_image with Pillow's pixel decoding made to fail: the result is simplejpeg's."""

    def no_pillow(image, min_side):
        raise AssertionError(f"Pillow decoded a {image.format} {image.mode} image")

    with monkeypatch.context() as patch:
        patch.setattr(image_decoding, "_pixels", no_pillow)
        return decode_image(data, min_side=min_side)


def orientation_jpeg(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif)


def mpo(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "MPO", save_all=True, append_images=[image.rotate(90)])
    return buffer.getvalue()


ODD = CAT.resize((1203, 803))  # sides that are not multiples of the 8 or 16 pixel MCU
FAST_JPEGS = {
    "baseline 4:2:0": encode(ODD, "JPEG", quality=90),
    "4:2:2": encode(ODD, "JPEG", quality=90, subsampling=1),
    "4:4:4": encode(ODD, "JPEG", quality=90, subsampling=0),
    "progressive": encode(ODD, "JPEG", quality=90, progressive=True),
    "progressive 4:4:4": encode(ODD, "JPEG", quality=90, progressive=True, subsampling=0),
    "grayscale": encode(ODD.convert("L"), "JPEG", quality=90),
    "RGB components (Adobe, no YCbCr)": encode(ODD, "JPEG", quality=90, keep_rgb=True),
    "MPO (phone multi-picture)": mpo(ODD),
    "exif-rotated": exif_rotated_jpeg(ODD),
    **{f"orientation {o}": orientation_jpeg(ODD, o) for o in range(1, 9)},
}


@pytest.mark.parametrize("name", sorted(FAST_JPEGS))
@pytest.mark.parametrize("min_side", [None, 256, 128, 64])  # DCT scale 1, 1/2, 1/4, 1/8
def test_the_jpeg_fast_path_gives_the_pixels_of_pillow(monkeypatch, name, min_side):
    data = FAST_JPEGS[name]
    fast = fast_path(monkeypatch, data, min_side)
    assert torch.equal(fast, pillow_path(monkeypatch, data, min_side))
    assert torch.equal(fast, decode_image(data, min_side=min_side))


def test_a_12_megapixel_photo_decodes_to_pillows_pixels_at_every_scale(monkeypatch):
    from benchmarks.large_photos import jpeg_of

    data = jpeg_of(Image.open(SAMPLES / "rocket.jpg"), 12)  # one of the 12 MP photos of `make bench`
    shapes = []
    for min_side in (None, 1024, 512, 256):  # what the handler uses, then 1/4 and 1/8
        fast = fast_path(monkeypatch, data, min_side)
        assert torch.equal(fast, pillow_path(monkeypatch, data, min_side)), min_side
        shapes.append(tuple(fast.shape))
    assert shapes == [(3, 2830, 4241), (3, 1415, 2121), (3, 708, 1061), (3, 354, 531)]


@pytest.mark.skipif(not IMAGENET_SAMPLE.is_dir(), reason=f"no photos in {IMAGENET_SAMPLE}")
def test_camera_photos_decode_to_pillows_pixels(monkeypatch):
    photos = sorted(IMAGENET_SAMPLE.glob("*.JPEG"))
    assert len(photos) >= 100
    for path in photos:
        data = path.read_bytes()
        for min_side in (None, 64):
            assert torch.equal(fast_path(monkeypatch, data, min_side), pillow_path(monkeypatch, data, min_side)), path


def test_cmyk_jpegs_take_the_fast_path_with_pillows_pixels(monkeypatch):
    cmyk = encode(CAT.convert("CMYK"), "JPEG", quality=95)
    for min_side in (None, 64):
        assert torch.equal(fast_path(monkeypatch, cmyk, min_side), pillow_path(monkeypatch, cmyk, min_side))


def test_a_jpeg_without_its_end_marker_is_decoded_once_and_without_simplejpeg_refused(monkeypatch):
    data = TRAILING_MARKERS["baseline JPEG"][0]
    assert torch.equal(fast_path(monkeypatch, data[:-2], None), decode_image(data))
    with pytest.raises(InvalidImage, match="^damaged JPEG image 451x300: image file is truncated"):
        pillow_path(monkeypatch, data[:-2], None)
