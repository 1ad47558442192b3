"""The formats this worker decodes, the optional decoders some need, and the name of what it refuses.

Always (any Pillow >= 10): JPEG (and the MPO JPEGs of phone cameras), PNG, GIF, WebP, BMP, TIFF and
JPEG 2000 (Pillow's wheels carry OpenJPEG). Where their decoder is installed: HEIC/HEIF, the iPhone
camera's format, through pi-heif (LGPL-3.0 wheels, decode-only; see docs/security.md for why not
pillow-heif), and AVIF through Pillow's own plugin (its wheels carry libavif from Pillow 11.3 on).
Restricting Pillow to these keeps its other decoders (EPS through Ghostscript, ...) unreachable.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
from typing import Dict, Tuple

import PIL
from PIL import Image, TiffImagePlugin, features

logger = logging.getLogger(__name__)

# Pillow format id -> the name users know it by. Pillow's JPEG opener also returns the multi-picture
# JPEGs (format "MPO") of phone cameras.
ALWAYS = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "GIF", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF"}
ALWAYS["JPEG2000"] = "JPEG 2000"
PI_HEIF = "pi-heif==1.4.0"
AVIF_PILLOW = (11, 3)
# ISO base media (HEIF) brands in the `ftyp` box: what the file is.
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2")
AVIF_BRANDS = (b"avif", b"avis")
# First bytes of formats refused, and their names (format, why it is not decoded).
OTHER_FORMATS: Tuple[Tuple[bytes, str], ...] = (
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x01\x00", "ICO (Windows icon)"),
    (b"\x00\x00\x02\x00", "CUR (Windows cursor)"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "Photoshop PSD"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML (SVG?)"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"qoif", "QOI"),
    (b"DDS ", "DirectDraw Surface (DDS)"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
)


@functools.cache
def decodable() -> Dict[str, str]:
    """Pillow format id -> name, for every format this worker decodes (optional ones once registered)."""
    formats = dict(ALWAYS)
    if _register_heif():
        formats["HEIF"] = "HEIC/HEIF"
    if features.check("avif"):
        formats["AVIF"] = "AVIF"
    return formats


def supported_names() -> str:
    return ", ".join(dict.fromkeys(decodable().values()))


def ftyp_brands(data: bytes) -> Tuple[bytes, ...]:
    """The major and compatible brands of an ISO base media file's leading `ftyp` box; () for others."""
    if data[4:8] != b"ftyp" or len(data) < 16:
        return ()
    size = min(int.from_bytes(data[:4], "big"), len(data), 4096)
    return (data[8:12],) + tuple(data[i : i + 4] for i in range(16, size - 3, 4))


def missing_decoder(data: bytes) -> str | None:
    """Why a format this worker knows cannot be decoded here (its decoder is not installed), or None."""
    brands = ftyp_brands(data)
    if any(b in AVIF_BRANDS for b in brands[:1]) or (brands and brands[0] == b"mif1" and b"avif" in brands):
        if "AVIF" not in decodable():
            return (
                f"AVIF needs Pillow >= {AVIF_PILLOW[0]}.{AVIF_PILLOW[1]}, whose wheels decode it; this worker has "
                f"Pillow {PIL.__version__} (pip install 'pillow>={AVIF_PILLOW[0]}.{AVIF_PILLOW[1]}')"
            )
        return None
    if any(b in HEIF_BRANDS for b in brands) and "HEIF" not in decodable():
        return f"HEIC/HEIF needs the pi-heif package, which this worker lacks (pip install {PI_HEIF})"
    return None


def refused_format(data: bytes) -> str | None:
    """The name of a format recognised by its first bytes that no decoder here reads, or None."""
    brands = ftyp_brands(data)
    if brands:
        if any(b[:2] in (b"qt", b"3g") or b in (b"isom", b"mp41", b"mp42", b"M4V ") for b in brands[:1]):
            return "a video (MP4/MOV)"
        return None
    head = data[:16].lstrip()
    return next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)


def describe_tiff(data: bytes) -> str | None:
    """'TIFF with 3 x 32-bit floating-point samples is not supported', from its first directory."""
    try:
        directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        stream = io.BytesIO(data)
        stream.seek(directory.next)
        directory.load(stream)
        bits = directory.get(258, (1,))
        samples = directory.get(277, 1)
        sample_format = directory.get(339, (1,))
        compression = directory.get(259, 1)
    except Exception:
        return None
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    sample_format = sample_format[0] if isinstance(sample_format, tuple) and sample_format else sample_format
    kind = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}.get(sample_format, "untyped")
    name = TiffImagePlugin.COMPRESSION_INFO.get(compression, f"compression {compression}")
    name = "uncompressed" if compression == 1 else name
    return f"TIFF with {samples} x {bits}-bit {kind} samples ({name}) is not supported"


def jpeg2000_levels(data: bytes) -> int:
    """Decomposition levels of the codestream's COD marker (ITU T.800 A.6.1): how many times it halves."""
    start = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ, in a raw codestream or a JP2 `jp2c` box
    pos = start + 2
    while 0 <= start and pos + 4 <= len(data):
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker == 0xFF52:  # COD: Scod, progression, layers (2), MCT, then decomposition levels
            return data[pos + 9] if pos + 9 < len(data) else 0
        if marker == 0xFF90:  # the first tile-part: no COD in the main header
            return 0
        pos += 2 + length
    return 0


def _register_heif() -> bool:
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        logger.info("pi-heif is not installed: HEIC/HEIF images are refused (pip install %s)", PI_HEIF)
        return False
    except Exception as e:  # a wheel for another platform, a missing shared library
        logger.warning("pi-heif could not load (%s): HEIC/HEIF images are refused", e)
        return False
    # Thumbnails and depth images are never used; the primary image is what is classified.
    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    return "HEIF" in Image.OPEN
