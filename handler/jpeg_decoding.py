"""JPEG pixels, decoded once, with the decoder's work bounded from the markers before any scan is read."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from jpeg_structure import DECODED_PROCESSES, PROGRESSIVE, JpegStructure, JpegStructureError, jpeg_structure
from PIL import Image
from request_errors import InvalidImage

logger = logging.getLogger(__name__)

JPEG_END = b"\xff\xd9"  # the end-of-image marker
# 8x8 blocks a JPEG's scans may walk in all (jpeg_structure.py): 25 million are about 0.5 s of
# libjpeg-turbo here, 13 passes over every block of a 40 MP 4:4:4 picture; a 40 MP progressive photo
# as libjpeg writes it (10 scans) walks 5 to 9 million.
MAX_JPEG_BLOCK_VISITS = 25_000_000
# A progressive JPEG's scan data costs libjpeg-turbo about 2.5x a baseline one's per byte: 29.5 MB of
# it took 1.3 s here, so at most this many bytes are decoded (a 40 MP progressive photo has 10-20 MB).
MAX_PROGRESSIVE_JPEG_BYTES = 24 * 1024 * 1024
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


def checked_structure(data: bytes) -> JpegStructure:
    """The JPEG's structure, once its frame is one libjpeg decodes to 8 bits, its scans' work is within
    MAX_JPEG_BLOCK_VISITS and a progressive one within MAX_PROGRESSIVE_JPEG_BYTES. Raises InvalidImage
    naming what is refused."""
    try:
        structure = jpeg_structure(data)
    except JpegStructureError as e:
        raise InvalidImage(f"damaged JPEG header: {e}") from None
    refusal = frame_refusal(structure)
    if refusal:
        raise InvalidImage(refusal)
    if structure.block_visits > MAX_JPEG_BLOCK_VISITS:
        raise InvalidImage(
            f"JPEG with {structure.scans} scans would walk {structure.block_visits} blocks to decode; "
            f"the limit is {MAX_JPEG_BLOCK_VISITS} (a photo's progressive JPEG walks a fraction of that)"
        )
    if structure.frame_marker in PROGRESSIVE and len(data) > MAX_PROGRESSIVE_JPEG_BYTES:
        raise InvalidImage(
            f"progressive JPEG of {len(data)} bytes; at most {MAX_PROGRESSIVE_JPEG_BYTES} bytes of a progressive "
            "JPEG are decoded (a baseline JPEG has no such limit below the request size)"
        )
    return structure


def refusal_of(data: bytes) -> str | None:
    """'12-bit JPEG is not supported' and the like, for a JPEG Pillow would not open; None otherwise."""
    try:
        return frame_refusal(jpeg_structure(data))
    except JpegStructureError:
        return None


def frame_refusal(structure: JpegStructure) -> str | None:
    if structure.precision != 8:
        return f"{structure.precision}-bit JPEG is not supported (8-bit samples only)"
    if structure.frame_marker not in DECODED_PROCESSES:
        return f"{structure.process} JPEG is not supported"
    return None


def turbo_jpeg_pixels(
    data: bytes, image: Image.Image, structure: JpegStructure, min_side: int | None
) -> torch.Tensor | None:
    """The pixels Pillow would decode (accurate integer IDCT, fancy upsampling, the DCT scale that
    draft() picks, Pillow's CMYK conversion), decoded once by simplejpeg straight into the array:
    about twice as fast on a 12 MP photo. None where simplejpeg is not installed (Pillow decodes).

    Any libjpeg warning refuses the image (strict). A JPEG that lacks only its end marker gets one
    appended, so a warning then means that pixel data is missing. Raises InvalidImage.
    """
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return None
    width, height = image.size
    scale = draft_scale(width, height, min_side)
    cmyk = image.mode == "CMYK"
    if not structure.has_end_marker:
        # A lone FF at the end is the first half of the end marker, or of a stuffed FF 00 of scan data.
        data = (data[:-1] if data.endswith(b"\xff") else data) + JPEG_END
    try:
        decoded = simplejpeg.decode_jpeg(
            data, "CMYK" if cmyk else "RGB", min_height=-(-height // scale), min_width=-(-width // scale), strict=True
        )
    except MemoryError:
        raise
    except Exception as e:  # damaged data, or a libjpeg warning (strict), e.g. scan data cut short
        raise InvalidImage(f"damaged JPEG image {width}x{height}: {e}") from None
    if cmyk:  # as Pillow does: Adobe's inverted CMYK (Pillow assumes it for every CMYK JPEG), then to RGB
        rows, columns = decoded.shape[:2]
        inverted = Image.frombuffer("CMYK", (columns, rows), decoded.tobytes(), "raw", "CMYK;I", 0, 1)
        decoded = np.array(inverted.convert("RGB"))
    orientation = exif_orientation(image)
    if orientation is not None:
        decoded = np.ascontiguousarray(ORIENTATIONS[orientation](decoded))
    return torch.from_numpy(decoded).permute(2, 0, 1)


@functools.cache
def _simplejpeg():
    """The simplejpeg module, or None (logged once) where it is not installed: Pillow then decodes JPEGs."""
    try:
        import simplejpeg
    except ImportError:
        logger.info("simplejpeg is not installed: JPEGs are decoded by Pillow (pip install simplejpeg for speed)")
        return None
    return simplejpeg


def draft_jpeg(image: Image.Image, min_side: int) -> None:
    """Let libjpeg scale down while decoding; draft() keeps both sides >= the requested ones."""
    request = draft_request(*image.size, min_side)
    if request is not None:
        image.draft("RGB", request)


def draft_request(width: int, height: int, min_side: int | None) -> tuple[int, int] | None:
    """The size `draft_jpeg` asks draft() for, or None where no scaling is worth it."""
    scale = 1.0 if min_side is None else min_side / min(width, height)
    if scale >= 0.5:  # only worth it when libjpeg can at least halve the image
        return None
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def draft_scale(width: int, height: int, min_side: int | None) -> int:
    """The DCT scale denominator (1, 2, 4, 8) that draft() picks for `draft_request`: the largest one
    that keeps both sides at least as long as the requested ones (Pillow's JpegImageFile.draft)."""
    request = draft_request(width, height, min_side)
    if request is None:
        return 1
    fits = min(width // request[0], height // request[1])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation if it is one that transforms (2-8); None where it is missing, odd or unreadable."""
    try:
        value = image.getexif().get(0x0112)
        return next((o for o in ORIENTATIONS if value == o), None)
    except Exception:
        return None
