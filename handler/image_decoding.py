"""Decode encoded image bytes to an RGB uint8 (3, H, W) tensor, or raise a typed request error.

Every image is decoded once, its work bounded before any pixel is decoded: the pixel limit and the
aspect ratio from the header, a JPEG's scans (jpeg_decoding.py), a PNG's chunks (png_chunks.py),
the resolution a JPEG 2000 decodes at. docs/security.md has each path's worst case, measured.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings

import numpy as np
import torch
from image_formats import decodable, describe_tiff, jpeg2000_levels, missing_decoder, refused_format, supported_names
from jpeg_decoding import checked_structure, draft_jpeg, exif_orientation, refusal_of, turbo_jpeg_pixels
from PIL import Image, ImageOps, UnidentifiedImageError
from png_chunks import PNG_SIGNATURE, png_for_decoding
from request_errors import ImageTooLarge, InvalidImage, RequestError

logger = logging.getLogger(__name__)

# About a 40-megapixel photo: more than any phone camera writes, well under what would hurt a worker.
DEFAULT_MAX_PIXELS = 40_000_000
# Wider than this and the Predictor's resize of the short side would make a huge strip.
MAX_ASPECT_RATIO = 200
# Formats decoded at full resolution (all but JPEG and JPEG 2000) at most this many pixels: 40 MP of PNG,
# GIF or lossless WebP cost a worker 1.4-1.7 s of CPU, 24 MP about 1 s (docs/security.md).
DEFAULT_MAX_FULL_DECODE_PIXELS = 24_000_000
# Full-resolution decoders that cost more per pixel than PNG's, GIF's and WebP's: their limit is
# max_full_decode_pixels divided by this. AVIF (libavif and dav1d, in Pillow's wheels) took 2.9 s of CPU
# for 24 MP of noise, 2.4 times lossless WebP's 1.2 s: 8 MP of it stays near 1 s. HEIC costs as much a
# pixel (1.5 s for 12 MP) but keeps the full limit: iPhones write 12 and 24 MP HEIC by default, and a
# third would refuse their photos (docs/security.md gives its worst case).
FULL_DECODE_COST = {"AVIF": 3}
# A JPEG 2000 decodes at the lowest resolution level that keeps its short side >= min_side, and lower
# still down to this many pixels: OpenJPEG took 6.4 s for 12 MP of noise here, about 0.5 us a pixel
# (docs/security.md). One with too few resolution levels to get there is refused.
MAX_JPEG2000_DECODED_PIXELS = 1_500_000
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS,
) -> torch.Tensor:
    """Decode `data` to an upright RGB uint8 tensor shaped (3, H, W).

    The pixel limit is checked on the header, before any pixel is decoded; formats that decode only at
    full resolution (all but JPEG and JPEG 2000) have the lower `max_full_decode_pixels`. With `min_side`, a JPEG
    is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least that long,
    and a JPEG 2000 at the lowest resolution level that does. An image whose pixel data is cut short
    is refused in every format; one that lacks only a trailing marker (a JPEG's end-of-image, a
    PNG's IEND, a GIF's trailer) is decoded. Metadata never stops the pixels.
    Raises InvalidImage or ImageTooLarge, and nothing else, whatever the bytes.
    """
    if not data:
        raise InvalidImage("empty body: no image bytes received")
    try:
        return _decode(bytes(data), max_pixels, min_side, max_full_decode_pixels)
    except RequestError:
        raise
    except MemoryError:
        raise ImageTooLarge("decoding this image needs more memory than the worker has") from None
    except Exception as e:  # a decoder's own failure that no check foresaw: still this image's 400
        logger.warning("decoder failed on a %d-byte image", len(data), exc_info=True)
        raise InvalidImage(f"undecodable image: {type(e).__name__}: {e}") from None


def _decode(data: bytes, max_pixels: int, min_side: int | None, max_full_decode_pixels: int) -> torch.Tensor:
    if data.startswith(PNG_SIGNATURE):
        data = png_for_decoding(data)
    image = _open(data, max_pixels)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InvalidImage(f"image is {width}x{height}; aspect ratios beyond {MAX_ASPECT_RATIO}:1 are refused")
    if image.format in ("JPEG", "MPO"):
        structure = checked_structure(data)
        fast = turbo_jpeg_pixels(data, image, structure, min_side)
        return fast if fast is not None else _pixels(image, min_side)
    if image.format == "JPEG2000":
        _reduce_jpeg2000(image, data, min_side)
    else:
        _check_full_decode_pixels(image.format, width, height, max_full_decode_pixels)
    return _pixels(image, None)


def _check_full_decode_pixels(fmt: str, width: int, height: int, max_full_decode_pixels: int) -> None:
    """ImageTooLarge when a format decoded at full resolution has more pixels than its limit:
    max_full_decode_pixels, divided by FULL_DECODE_COST for the costlier decoders."""
    cost = FULL_DECODE_COST.get(fmt, 1)
    if width * height <= max_full_decode_pixels // cost:
        return
    found = f"{fmt} image is {width}x{height} = {width * height} pixels"
    if cost == 1:
        raise ImageTooLarge(
            f"{found}; formats decoded at full resolution (all but JPEG) are limited to {max_full_decode_pixels} "
            "(handler.max_full_decode_pixels): send a JPEG"
        )
    raise ImageTooLarge(
        f"{found}; {fmt} decodes at full resolution at about {cost} times the cost of PNG, and is "
        f"limited to {max_full_decode_pixels // cost} (handler.max_full_decode_pixels / {cost}): send a JPEG"
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own limit, checked after this, is lower than Pillow's bomb warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=tuple(decodable()))
    except Image.DecompressionBombError as e:
        # Pillow's own guard (far above ours) fired while reading the header; nothing was decoded.
        declared = re.search(r"\((\d+) pixels\)", str(e))
        pixels = declared.group(1) if declared else "too many"
        raise ImageTooLarge(f"image declares {pixels} pixels; the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        raise InvalidImage(_unidentified(data)) from None
    except Exception as e:  # Pillow's header parsers raise assorted types on damaged or unsupported files
        raise InvalidImage(_unopened(data, e)) from None


def _unidentified(data: bytes) -> str:
    """Why Pillow identified no format: what the bytes are; never 'damaged' for a valid file of a
    format refused, and never a list of supported formats that holds the refused one."""
    if data.startswith(PNG_SIGNATURE) and _png_declares_no_pixels(data):
        width, height = struct.unpack(">II", data[16:24])
        return f"image has no pixels ({width}x{height})"
    missing = missing_decoder(data)
    if missing:
        return missing
    if data[:3] == b"\xff\xd8\xff":
        return refusal_of(data) or "damaged JPEG header: not identifiable"
    if data.startswith(PNG_SIGNATURE):
        return "damaged PNG header: not identifiable"
    if data[:4] in TIFF_MAGIC:
        return describe_tiff(data) or "damaged TIFF header: not identifiable"
    first = data[:4].hex(" ")
    name = refused_format(data)
    if name:
        return f"{name} is not supported (first bytes {first}); supported: {supported_names()}"
    return f"not a decodable image (first bytes {first}); supported: {supported_names()}"


def _unopened(data: bytes, error: Exception) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return refusal_of(data) or f"damaged JPEG header: {error}"
    if data[:4] in TIFF_MAGIC and "unknown pixel mode" in str(error):
        return describe_tiff(data) or f"TIFF is not supported: {error}"
    return f"damaged {_guess_format(data)} header: {error}"


def _pixels(image: Image.Image, min_side: int | None) -> torch.Tensor:
    width, height = image.size
    try:
        if min_side is not None and image.format in ("JPEG", "MPO"):
            draft_jpeg(image, min_side)
        image.load()
        image = _upright(image)
        rgb = _to_rgb(image)
    except MemoryError:
        raise
    except Exception as e:  # truncated or corrupt pixel data
        raise InvalidImage(f"damaged {image.format} image {width}x{height}: {e}") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def _reduce_jpeg2000(image: Image.Image, data: bytes, min_side: int | None) -> None:
    """Decode a JPEG 2000 at the lowest resolution level whose short side stays >= `min_side`, or
    lower while it would decode more than MAX_JPEG2000_DECODED_PIXELS; refuse one whose levels end first."""
    width, height = image.size
    levels = jpeg2000_levels(data)

    def pixels(reduce: int) -> int:
        return -(-width // 2**reduce) * -(-height // 2**reduce)

    def side(reduce: int) -> int:
        return min(-(-width // 2**reduce), -(-height // 2**reduce))

    reduce = 0
    while reduce < levels and (
        pixels(reduce) > MAX_JPEG2000_DECODED_PIXELS or (min_side is not None and side(reduce + 1) >= min_side)
    ):
        reduce += 1
    if pixels(reduce) > MAX_JPEG2000_DECODED_PIXELS:
        raise ImageTooLarge(
            f"JPEG 2000 image {width}x{height} ({levels} resolution levels) would decode {pixels(reduce)} pixels; "
            f"the limit for JPEG 2000 is {MAX_JPEG2000_DECODED_PIXELS}, its decoder is slow"
        )
    if reduce:
        image.reduce = reduce  # Pillow's Jpeg2KImageFile decodes at 1/2**reduce


def _guess_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data[:4] in TIFF_MAGIC:
        return "TIFF"
    return "image"


def _png_declares_no_pixels(data: bytes) -> bool:
    """Pillow refuses a zero-sized PNG as unidentifiable; its IHDR says why."""
    return len(data) >= 24 and data[12:16] == b"IHDR" and 0 in struct.unpack(">II", data[16:24])


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a missing, odd or unreadable tag leaves the image as it is."""
    if exif_orientation(image) is None:
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
