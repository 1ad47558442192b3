"""Images that phones, browsers and image tools write and that the handler once refused, written here
(never downloaded): HEIC, AVIF, JPEG 2000, PNGs with big metadata; and formats it still refuses."""

import io
import struct
import zlib

import numpy as np
from image_variants import encode
from PIL import Image

EXIF_ORIENTATION = 0x0112


def heic(image: Image.Image, quality: int = 90, exif: bytes | None = None) -> bytes:
    """HEIC as an iPhone writes it (HEVC in HEIF), by pillow-heif's encoder (a test tool: GPL x265)."""
    import pillow_heif

    buffer = io.BytesIO()
    options = {"exif": exif} if exif else {}
    pillow_heif.from_pillow(image).save(buffer, format="HEIF", quality=quality, **options)
    return buffer.getvalue()


def avif(image: Image.Image, quality: int = 90, exif: bytes | None = None) -> bytes:
    return encode(image, "AVIF", quality=quality, **({"exif": exif} if exif else {}))


def jpeg2000(image: Image.Image, levels: int = 5, container: bool = True) -> bytes:
    """Lossy (9/7 wavelet) JPEG 2000, in a JP2 container or as a bare codestream (.j2k)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG2000", irreversible=True, num_resolutions=levels + 1, no_jp2=not container)
    return buffer.getvalue()


def rotated_with_orientation(image: Image.Image) -> tuple:
    """`image` stored rotated 90 degrees and EXIF orientation 8 that undoes it, as phones write."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    return image.transpose(Image.Transpose.ROTATE_270), exif.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_metadata(png: bytes, megabytes: float = 3.0, after_pixels: bool = False) -> bytes:
    """`png` with a large XMP packet as ImageMagick writes one (a zTXt "Raw profile type xmp" of hex
    text) and a large iCCP profile: both inflate past Pillow's 1 MB cap on a metadata chunk."""
    size = int(megabytes * 1_000_000)
    xmp = b"\nxmp\n" + str(size).encode() + b"\n" + (b"3c783a786d706d657461" * (size // 20 + 1))[:size]
    text = png_chunk(b"zTXt", b"Raw profile type xmp\0\0" + zlib.compress(xmp, 9))
    icc = png_chunk(b"iCCP", b"profile\0\0" + zlib.compress(bytes(size), 9))
    at = png.index(b"IEND") - 4 if after_pixels else 33  # after IHDR, or just before IEND
    return png[:at] + text + icc + png[at:]


def png_in_tiny_chunks(png: bytes, chunk_count: int) -> bytes:
    """`png` whose image data is split into `chunk_count` IDAT chunks (empty ones after the data)."""
    start = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[start : start + 4])
    idat = png[start : start + 12 + length]
    empty = png_chunk(b"IDAT", b"")
    return png[:start] + idat + empty * (chunk_count - 1) + png[start + 12 + length :]


def jpeg_with_precision(jpeg: bytes, bits: int) -> bytes:
    """`jpeg` whose frame header declares `bits` per sample (12: what medical and raw tools write)."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 4] + bytes([bits]) + jpeg[at + 5 :]


def lossless_jpeg(jpeg: bytes) -> bytes:
    """`jpeg` with its frame marker made SOF3, lossless JPEG (DNG previews, DICOM)."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at] + b"\xff\xc3" + jpeg[at + 2 :]


def float_rgb_tiff(width: int = 16, height: int = 8) -> bytes:
    """An uncompressed RGB TIFF of 32-bit floating-point samples (HDR and scientific tools write them)."""
    pixels = np.random.default_rng(0).random((height, width, 3), dtype=np.float32).astype("<f4").tobytes()
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, None),  # BitsPerSample 32, 32, 32: at `extra`
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),  # StripOffsets: the pixels
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (339, 3, 3, None),  # SampleFormat 3 (IEEE float) x 3: at `extra` + 6
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    extra = 8 + ifd_size
    data_at = extra + 12
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = extra
        elif tag == 339:
            value = extra + 6
        elif tag == 273:
            value = data_at
        packed = struct.pack("<HHI", tag, kind, count)
        ifd += packed + (struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value))
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<6H", 32, 32, 32, 3, 3, 3) + pixels
