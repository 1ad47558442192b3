"""The bad-input corpus: every request the handler must refuse, with its status and message, and the
odd-looking images it must classify. Shared by the in-process and live-server tests."""

import base64
import json
import re
import zlib
from dataclasses import dataclass
from typing import Dict, List

from image_formats import supported_names
from image_variants import encode, exif_rotated_jpeg, png_16bit_rgb, sample
from PIL import Image
from request_forms import multipart

from mar_builder.server.soak import png_header, png_written_by_hand

OCTET = "application/octet-stream"
JSON = "application/json"
SUPPORTED = f"supported: {re.escape(supported_names())}"


@dataclass(frozen=True)
class BadRequest:
    name: str
    body: bytes
    content_type: str
    status: int
    type: str
    message: str  # a regular expression the JSON body's message must match


def png_bomb(side: int = 30000) -> bytes:
    """A complete, valid 1-bit side x side PNG of zeros: about 110 KB that would decode to 900 MB."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_written_by_hand(side, side, 1, 0, idat)


def bad_requests() -> List[BadRequest]:
    cat = sample("chelsea.png")  # 451x300
    jpeg, png = encode(cat, "JPEG", quality=90), encode(cat, "PNG")
    crc_damaged = bytearray(png)
    crc_damaged[40] ^= 0xFF  # inside the first IDAT chunk: its CRC no longer matches
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    no_file_part, form_type = multipart("note", None, b"hello")
    tiny = encode(cat.resize((8, 6)), "PNG")
    return [
        BadRequest("empty body", b"", OCTET, 400, "InvalidImage", "^empty body: no image bytes received$"),
        BadRequest(
            "text, not an image",
            b"hello world",
            OCTET,
            400,
            "InvalidImage",
            rf"^not a decodable image \(first bytes 68 65 6c 6c\); {SUPPORTED}$",
        ),
        BadRequest("truncated JPEG", jpeg[: len(jpeg) // 2], OCTET, 400, "InvalidImage", "^damaged JPEG image 451x300"),
        BadRequest(
            "JPEG without its last scan byte", jpeg[:-3], OCTET, 400, "InvalidImage", "^damaged JPEG image 451x300"
        ),
        BadRequest("JPEG cut in its header", jpeg[:20], OCTET, 400, "InvalidImage", "^damaged JPEG header"),
        BadRequest("truncated PNG", png[:5000], OCTET, 400, "InvalidImage", "^damaged PNG image 451x300"),
        BadRequest("PNG with a bad CRC", bytes(crc_damaged), OCTET, 400, "InvalidImage", "^damaged PNG"),
        BadRequest(
            "SVG", svg, OCTET, 400, "InvalidImage", rf"^SVG is not supported \(first bytes 3c 73 76 67\); {SUPPORTED}$"
        ),
        BadRequest(
            "ICO",
            encode(cat.resize((32, 32)), "ICO"),
            OCTET,
            400,
            "InvalidImage",
            r"^ICO \(Windows icon\) is not supported \(first bytes 00 00 01 00\)",
        ),
        BadRequest(
            "PDF", encode(cat, "PDF"), OCTET, 400, "InvalidImage", r"^PDF is not supported \(first bytes 25 50 44 46\)"
        ),
        BadRequest("TGA", encode(cat, "TGA"), OCTET, 400, "InvalidImage", SUPPORTED),
        BadRequest(
            "zero-width PNG", png_header(0, 300), OCTET, 400, "InvalidImage", r"^image has no pixels \(0x300\)$"
        ),
        BadRequest(
            "4020x20 strip", encode(Image.new("RGB", (4020, 20)), "PNG"), OCTET, 400, "InvalidImage", "beyond 200:1"
        ),
        BadRequest("malformed JSON", b'{"data": ', JSON, 400, "InvalidRequest", "^malformed JSON body"),
        BadRequest(
            "JSON without data", b'{"image": "aGk="}', JSON, 400, "InvalidRequest", 'no "data" or "instances" field'
        ),
        BadRequest(
            "JSON with bad base64", b'{"data": "%%%"}', JSON, 400, "InvalidRequest", "invalid base64 image data"
        ),
        BadRequest("JSON data not a string", b'{"data": 5}', JSON, 400, "InvalidRequest", "must be a base64 string"),
        BadRequest("multipart without a file part", no_file_part, form_type, 400, "InvalidRequest", "no file part"),
        BadRequest(
            "17 images in one request",
            json.dumps({"instances": [{"data": base64.b64encode(tiny).decode()}] * 17}).encode(),
            JSON,
            413,
            "TooManyImages",
            r"^the request holds 17 images; the limit is 16 \(handler.max_images_per_request\)",
        ),
        BadRequest("30000x30000 PNG bomb", png_bomb(), OCTET, 413, "ImageTooLarge", "^image declares 900000000 pixels"),
        BadRequest(
            "8000x6000 PNG header",
            png_header(8000, 6000),
            OCTET,
            413,
            "ImageTooLarge",
            "^image is 8000x6000 = 48000000 pixels; the limit is 40000000$",
        ),
    ]


def odd_but_valid_images() -> Dict[str, bytes]:
    """Images that look unusual but are valid: each must be classified (200), not refused."""
    cat = sample("chelsea.png")
    red, blue = Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (64, 48), (30, 30, 200))
    animated_gif = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    multipage_tiff = encode(red, "TIFF", save_all=True, append_images=[blue])
    odd_exif = Image.Exif()
    odd_exif[0x0112] = 9  # orientations are 1-8; anything else is ignored
    zero_exif = Image.Exif()
    zero_exif[0x0112] = 0
    return {
        "1x1": encode(Image.new("RGB", (1, 1), (120, 80, 40)), "PNG"),
        "8x6": encode(cat.resize((8, 6)), "PNG"),
        "4000x50": encode(cat.resize((4000, 50)), "JPEG"),
        "50x4000": encode(cat.resize((50, 4000)), "PNG"),
        "16-bit PNG": png_16bit_rgb(cat),
        "animated GIF": animated_gif,
        "multi-page TIFF": multipage_tiff,
        "EXIF orientation 9": encode(cat, "JPEG", exif=odd_exif),
        "EXIF orientation 0": encode(cat, "JPEG", exif=zero_exif),
        "EXIF-rotated JPEG": exif_rotated_jpeg(cat),
    }
