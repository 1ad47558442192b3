"""Encoded test images built from the shipped samples: every format and mode the handler promises."""

import io
import zlib
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image

from mar_builder.server.soak import png_written_by_hand

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
EXIF_ORIENTATION = 0x0112


def sample(name: str) -> Image.Image:
    return Image.open(SAMPLES / name).convert("RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_16bit_gray(image: Image.Image) -> bytes:
    values = np.asarray(image.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return encode(Image.fromarray(values), "PNG")


def png_16bit_rgb(image: Image.Image) -> bytes:
    """A 48-bit RGB PNG written by hand: Pillow cannot save one, but phones and scanners do."""
    values = (np.asarray(image, dtype=np.uint16) * 257).astype(">u2")
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + values[y].tobytes() for y in range(height))
    return png_written_by_hand(width, height, 16, 2, zlib.compress(raw))


def exif_rotated_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    """Pixels stored rotated 90° clockwise with orientation 8, so a viewer shows them upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8  # "rotate 90° clockwise to display": undoes the stored rotation
    return encode(image.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=quality, exif=exif)


def all_variants(image: Image.Image) -> Dict[str, bytes]:
    """Name -> encoded bytes; every one must decode to (nearly) the same upright picture."""
    rgba = image.convert("RGBA")
    return {
        "jpeg-baseline": encode(image, "JPEG", quality=95),
        "jpeg-progressive": encode(image, "JPEG", quality=95, progressive=True),
        "jpeg-grayscale": encode(image.convert("L"), "JPEG", quality=95),
        "jpeg-cmyk": encode(image.convert("CMYK"), "JPEG", quality=95),
        "jpeg-exif-rotated": exif_rotated_jpeg(image),
        "png-rgb": encode(image, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-grayscale": encode(image.convert("L"), "PNG"),
        "png-grayscale-alpha": encode(image.convert("LA"), "PNG"),
        "png-palette": encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png-16bit-gray": png_16bit_gray(image),
        "png-16bit-rgb": png_16bit_rgb(image),
        "gif": encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "webp-lossy": encode(image, "WEBP", quality=95),
        "webp-lossless": encode(rgba, "WEBP", lossless=True),
        "bmp": encode(image, "BMP"),
        "tiff-rgb": encode(image, "TIFF"),
        "tiff-cmyk": encode(image.convert("CMYK"), "TIFF"),
        "tiff-grayscale": encode(image.convert("L"), "TIFF"),
    }
