"""The worst case of every decode path: files crafted to cost the handler's decode_image the most CPU
within the limits (32 MiB request body, 40 MP, the JPEG block-visit and PNG chunk bounds), timed in
process. `python -m benchmarks.decode_worst_case [--megapixels 40] [--quick]`; docs/security.md keeps
a measured table. Each file is decoded the way the handler does (min_side = 4 x the resize size 256)
and then resized to 256 on its short side with the Predictor's antialiased resize, so a row is what
one image costs a worker before the network runs.
"""

import argparse
import io
import math
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from mar_builder.archive.model_archive import HANDLER_DIR

sys.path.insert(0, str(HANDLER_DIR))
sys.path.insert(0, str(HANDLER_DIR.parent / "tests"))

MAX_BODY = 32 * 1024 * 1024
MIN_SIDE = 4 * 256  # the handler's jpeg_draft_factor x the default model's resize size


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def sized(megapixels: float, aspect: float = 4 / 3) -> Tuple[int, int]:
    height = int(math.sqrt(megapixels * 1e6 / aspect))
    return int(height * aspect), height


def noise(size: Tuple[int, int], levels: int = 256, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels of `levels` grey levels: the fewer, the more a lossless format can compress them."""
    width, height = size
    channels = len(mode)
    values = np.random.default_rng(seed).integers(0, levels, (height, width, channels), dtype=np.uint8)
    values = values * (255 // max(1, levels - 1))
    return Image.fromarray(values[:, :, 0] if channels == 1 else values, mode)


def largest_under_body_limit(make: Callable[[int], bytes], qualities: List[int]) -> bytes:
    """The largest file of `make(quality)` that fits the request body limit."""
    best = b""
    for quality in qualities:
        try:
            data = make(quality)
        except OSError:  # Pillow's progressive encoder runs out of buffer on the largest noise files
            continue
        if len(data) <= MAX_BODY and len(data) > len(best):
            best = data
    return best


def cases(megapixels: float, quick: bool) -> Dict[str, Callable[[], bytes]]:
    from crafted_jpegs import many_scan_jpeg
    from jpeg_decoding import MAX_JPEG_BLOCK_VISITS
    from png_chunks import MAX_PNG_CHUNKS
    from untrusted_images import avif, heic, jpeg2000, png_in_tiny_chunks

    size = sized(megapixels)
    blocks = -(-size[0] // 8) * -(-size[1] // 8)
    scans_in_budget = MAX_JPEG_BLOCK_VISITS // blocks
    photo_mp = 12 if quick else megapixels
    photo = sized(photo_mp)
    return {
        f"JPEG baseline 4:4:4, noise, {megapixels:g} MP, largest <= 32 MiB": lambda: largest_under_body_limit(
            lambda q: encode(noise(size), "JPEG", quality=q, subsampling=0), [30, 50, 65]
        ),
        f"JPEG progressive 4:4:4, noise, {megapixels:g} MP, largest <= 32 MiB": lambda: largest_under_body_limit(
            lambda q: encode(noise(size), "JPEG", quality=q, subsampling=0, progressive=True), [30, 50, 65]
        ),
        f"JPEG crafted: {scans_in_budget} empty scans of {megapixels:g} MP (at the block-visit limit)": lambda: (
            many_scan_jpeg(*size, bands=max(1, (scans_in_budget - 1) // 14))
        ),
        f"PNG RGB, 4 grey levels of noise, {megapixels:g} MP": lambda: encode(noise(size, 4), "PNG"),
        f"PNG RGBA, zeros, {megapixels:g} MP (most inflate per byte)": lambda: encode(Image.new("RGBA", size), "PNG"),
        f"PNG, {MAX_PNG_CHUNKS} chunks": lambda: png_in_tiny_chunks(
            encode(Image.new("RGB", (64, 48)), "PNG"), MAX_PNG_CHUNKS
        ),
        f"GIF, 16 colours of noise, {megapixels:g} MP": lambda: encode(noise(size, 16, "L"), "GIF"),
        f"WebP lossless, 4 levels of noise, {megapixels:g} MP": lambda: encode(
            noise(sized(min(megapixels, 16383 * 16383 / 1e6)), 4), "WEBP", lossless=True, method=0
        ),
        f"WebP lossy, noise, {megapixels:g} MP": lambda: encode(noise(size), "WEBP", quality=90, method=0),
        f"TIFF deflate, zeros, {megapixels:g} MP": lambda: encode(
            Image.new("RGB", size), "TIFF", compression="tiff_adobe_deflate"
        ),
        f"TIFF LZW, 4 levels of noise, {megapixels:g} MP": lambda: encode(
            noise(size, 4), "TIFF", compression="tiff_lzw"
        ),
        f"BMP RLE8 (as Pillow reads it), {megapixels:g} MP": lambda: bmp_rle8(size),
        "JPEG 2000, no resolution levels, 1.5 MP (the JPEG 2000 limit)": lambda: jpeg2000(noise(sized(1.5)), levels=0),
        f"JPEG 2000, 5 levels, {megapixels:g} MP": lambda: jpeg2000(noise(size, 16), levels=5),
        f"HEIC, noise, {photo_mp:g} MP": lambda: heic(noise(photo)),
        f"AVIF, noise, {photo_mp:g} MP": lambda: avif(noise(photo)),
    }


def bmp_rle8(size: Tuple[int, int]) -> bytes:
    """An 8-bit RLE BMP of runs of 255 pixels: about 2 bytes a run, 128x smaller than its pixels."""
    import struct

    width, height = size
    row = b"".join(bytes([min(255, width - x), x % 7]) for x in range(0, width, 255)) + b"\x00\x00"
    pixels = row * height + b"\x00\x01"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    header = struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return header + info + palette + pixels


def cost(data: bytes, repeats: int, full_decode_limit: int) -> Tuple[float, str]:
    """Best-of CPU seconds of decode_image + the Predictor's resize, and the outcome."""
    from image_decoding import decode_image
    from request_errors import RequestError

    best, outcome = math.inf, ""
    for _ in range(repeats):
        start = time.process_time()
        try:
            pixels = decode_image(data, min_side=MIN_SIDE, max_full_decode_pixels=full_decode_limit)
            scale = 256 / min(pixels.shape[1:])
            size = [max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[2] * scale))]
            torch.ops.aten._upsample_bilinear2d_aa(pixels.unsqueeze(0).float(), size, False, None)
            outcome = f"decoded at {pixels.shape[2]}x{pixels.shape[1]}"
        except RequestError as e:
            outcome = f"{e.status} {type(e).__name__}: {str(e)[:70]}"
        best = min(best, time.process_time() - start)
    return best, outcome


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=40.0, help="the pixel limit (handler.max_image_pixels)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="HEIC and AVIF at 12 MP (their encoders are slow)")
    parser.add_argument(
        "--full-decode-limit",
        type=int,
        default=10**9,
        help="handler.max_full_decode_pixels (default: none, to time 40 MP)",
    )
    parser.add_argument("--only", default="", help="run the cases whose name holds this text")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a worker's share of the CPU
    print(f"{'case':<72} {'bytes':>10} {'CPU s':>6}  outcome")
    for name, make in cases(args.megapixels, args.quick).items():
        if args.only and args.only not in name:
            continue
        try:
            data = make()
        except (OSError, ValueError) as e:  # an encoder's own limit (WebP's partition size, ...)
            print(f"{name:<72} {'-':>10} {'-':>6}  not encodable here: {e}", flush=True)
            continue
        seconds, outcome = cost(data, args.repeats, args.full_decode_limit)
        print(f"{name:<72} {len(data):>10} {seconds:>6.2f}  {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
