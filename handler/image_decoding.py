"""Decode encoded image bytes to an RGB uint8 (3, H, W) tensor, or raise a typed request error."""

from __future__ import annotations

import functools
import io
import logging
import re
import struct
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from request_errors import ImageTooLarge, InvalidImage

logger = logging.getLogger(__name__)

# Formats decoded; restricting Pillow to them keeps decoders such as EPS (Ghostscript) unreachable.
# Pillow's JPEG opener also returns the multi-picture JPEGs (format "MPO") that phone cameras write.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
SUPPORTED_NAMES = "JPEG, PNG, GIF, WebP, BMP, TIFF"
# About a 40-megapixel photo: more than any phone camera writes, well under what would hurt a worker.
DEFAULT_MAX_PIXELS = 40_000_000
# Wider than this and the Predictor's resize of the short side would make a huge strip.
MAX_ASPECT_RATIO = 200
JPEG_END = b"\xff\xd9"  # the end-of-image marker
# Bytes that are not a marker (no FF) and decode to varied coefficients when read as scan data; the
# first bits are ones, where a missing end marker leaves libjpeg zeros.
JPEG_FILLER = b"\xfe" + bytes(range(0x11, 0xF1))
# The EXIF orientation (2-8) as the numpy transform of an (H, W, C) array that ImageOps.exif_transpose does.
ORIENTATIONS = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90
}


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None) -> torch.Tensor:
    """Decode `data` to an upright RGB uint8 tensor shaped (3, H, W).

    The pixel limit is checked on the header, before any pixel is decoded. With `min_side`, a JPEG
    is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least that long.
    An image whose pixel data is cut short is refused in every format; one that lacks only a
    trailing marker (a JPEG's end-of-image, a PNG's IEND, a GIF's trailer) is decoded.
    Raises InvalidImage or ImageTooLarge; nothing else for bad input.
    """
    if not data:
        raise InvalidImage("empty body: no image bytes received")
    try:
        with warnings.catch_warnings():
            # Our own limit, checked below, is lower than Pillow's bomb warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as e:
        # Pillow's own guard (far above ours) fired while reading the header; nothing was decoded.
        declared = re.search(r"\((\d+) pixels\)", str(e))
        pixels = declared.group(1) if declared else "too many"
        raise ImageTooLarge(f"image declares {pixels} pixels; the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        known = _guess_format(data)
        if known == "PNG" and _png_declares_no_pixels(data):
            width, height = struct.unpack(">II", data[16:24])
            raise InvalidImage(f"image has no pixels ({width}x{height})") from None
        if known != "image":
            raise InvalidImage(f"damaged {known} header: not identifiable") from None
        raise InvalidImage(
            f"not a decodable image (first bytes {data[:4].hex(' ')}); supported: {SUPPORTED_NAMES}"
        ) from None
    except Exception as e:  # Pillow's header parsers raise assorted types on damaged files
        raise InvalidImage(f"damaged {_guess_format(data)} header: {e}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InvalidImage(f"image is {width}x{height}; aspect ratios beyond {MAX_ASPECT_RATIO}:1 are refused")
    fast = _turbo_jpeg_pixels(data, image, min_side)
    if fast is not None:
        return fast
    try:
        return _pixels(image, min_side)
    except InvalidImage:
        if image.format not in ("JPEG", "MPO") or data.endswith(JPEG_END):
            raise
        # Only the end-of-image marker may be missing: libjpeg waits for it before the last rows.
        complete = _jpeg_with_end_marker(data, min_side)
        if complete is None:
            raise
        return complete


def _pixels(image: Image.Image, min_side: int | None) -> torch.Tensor:
    width, height = image.size
    try:
        if min_side is not None and image.format in ("JPEG", "MPO"):
            _draft_jpeg(image, min_side)
        image.load()
        image = _upright(image)
        rgb = _to_rgb(image)
    except MemoryError:
        raise
    except Exception as e:  # truncated or corrupt pixel data
        raise InvalidImage(f"damaged {image.format} image {width}x{height}: {e}") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def _turbo_jpeg_pixels(data: bytes, image: Image.Image, min_side: int | None) -> torch.Tensor | None:
    """The pixels of `_pixels`, decoded by simplejpeg straight into the array: the same libjpeg-turbo
    decode (accurate integer IDCT, fancy upsampling, the DCT scale that draft() picks) without Pillow's
    copies, about twice as fast on a 12 MP photo. None where it does not apply (not a JPEG, CMYK,
    simplejpeg not installed) or the decode warns or fails: then Pillow decodes, with its handling of
    damaged and truncated data.
    """
    if image.format not in ("JPEG", "MPO") or image.mode not in ("RGB", "L"):
        return None  # CMYK: Pillow's CMYK -> RGB conversion differs from simplejpeg's by one grey level
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return None
    width, height = image.size
    scale = _draft_scale(width, height, min_side)
    shape = (-(-height // scale), -(-width // scale), 3)
    try:
        rgb = simplejpeg.decode_jpeg(data, "RGB", min_height=shape[0], min_width=shape[1], strict=True)
    except MemoryError:
        raise
    except Exception:  # damaged data, or a warning (strict), e.g. a missing end marker
        return None
    if rgb.shape != shape:
        return None
    orientation = _orientation(image)
    if orientation is not None:
        rgb = np.ascontiguousarray(ORIENTATIONS[orientation](rgb))
    return torch.from_numpy(rgb).permute(2, 0, 1)


@functools.cache
def _simplejpeg():
    """The simplejpeg module, or None (logged once) where it is not installed: Pillow then decodes JPEGs."""
    try:
        import simplejpeg
    except ImportError:
        logger.info("simplejpeg is not installed: JPEGs are decoded by Pillow (pip install simplejpeg for speed)")
        return None
    return simplejpeg


def _jpeg_with_end_marker(data: bytes, min_side: int | None) -> torch.Tensor | None:
    """The image of a JPEG whose scan data is all there and only its end marker (FF D9) is missing.

    Given an end marker, libjpeg fills scan data that is missing with zeros and decodes anyway. So
    the JPEG is decoded twice: once with the marker right after the data, once with filler bytes
    before it. If the scan data is complete, the filler is never read and both images are equal; if
    it is not, the filler becomes pixels and they differ: None, the image is really truncated.
    """
    # A lone FF at the end is the first half of the end marker, or of a stuffed FF 00 of scan data.
    data = data[:-1] if data.endswith(b"\xff") else data
    decoded = []
    for ending in (JPEG_END, JPEG_FILLER + JPEG_END):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                decoded.append(_pixels(Image.open(io.BytesIO(data + ending), formats=("JPEG",)), min_side))
        except (InvalidImage, OSError, ValueError):
            return None
    exact, filled = decoded
    return exact if torch.equal(exact, filled) else None


def _guess_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    return "image"


def _png_declares_no_pixels(data: bytes) -> bool:
    """Pillow refuses a zero-sized PNG as unidentifiable; its IHDR says why."""
    return len(data) >= 24 and data[12:16] == b"IHDR" and 0 in struct.unpack(">II", data[16:24])


def _draft_jpeg(image: Image.Image, min_side: int) -> None:
    """Let libjpeg scale down while decoding; draft() keeps both sides >= the requested ones."""
    request = _draft_request(*image.size, min_side)
    if request is not None:
        image.draft("RGB", request)


def _draft_request(width: int, height: int, min_side: int | None) -> tuple[int, int] | None:
    """The size `_draft_jpeg` asks draft() for, or None where no scaling is worth it."""
    scale = 1.0 if min_side is None else min_side / min(width, height)
    if scale >= 0.5:  # only worth it when libjpeg can at least halve the image
        return None
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def _draft_scale(width: int, height: int, min_side: int | None) -> int:
    """The DCT scale denominator (1, 2, 4, 8) that draft() picks for `_draft_request`: the largest one
    that keeps both sides at least as long as the requested ones (Pillow's JpegImageFile.draft)."""
    request = _draft_request(width, height, min_side)
    if request is None:
        return 1
    fits = min(width // request[0], height // request[1])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation if it is one that transforms (2-8); None where it is missing, odd or unreadable."""
    try:
        value = image.getexif().get(0x0112)
        return next((o for o in ORIENTATIONS if value == o), None)
    except Exception:
        return None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a missing, odd or unreadable tag leaves the image as it is."""
    if _orientation(image) is None:
        return image
    return ImageOps.exif_transpose(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB. Alpha is dropped, as torchvision's ImageFolder loader does."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit integer) grayscale: Pillow's convert() would clip, not scale.
        values = np.asarray(image, dtype=np.int64)
        shift = 8 if values.max(initial=0) > 255 else 0
        image = Image.fromarray(np.clip(values >> shift, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        peak = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")
