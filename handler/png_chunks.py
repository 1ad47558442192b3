"""A PNG's chunks, walked once before decoding: metadata the handler never uses is dropped, and the
chunk count is bounded.

Pillow refuses a whole PNG over its metadata: a text chunk (tEXt, zTXt, iTXt) or ICC profile (iCCP)
that inflates past 1 MB (PngImagePlugin.MAX_TEXT_CHUNK), or text past 64 MB in all, raises
"Decompressed Data Too Large" while reading the header, or after the pixels when the chunk follows
them. ImageMagick writes XMP and other profiles as such chunks. The pixels do not need them, so they
are dropped; the one text chunk kept is ImageMagick's EXIF ("Raw profile type exif", where Pillow
finds the orientation), when it is small enough to be EXIF (at most 64 KiB once decoded).
Pillow reads every chunk in a Python step, so a PNG cut into very many tiny chunks costs a worker
seconds: more than `MAX_PNG_CHUNKS` are refused.
"""

from __future__ import annotations

import struct
import zlib

from request_errors import InvalidImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METADATA_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"iCCP")
EXIF_TEXT_KEYWORD = b"Raw profile type exif"
# EXIF is at most 64 KiB (one JPEG APP1 segment); ImageMagick writes it as hex text, twice as long,
# plus a header line.
MAX_EXIF_TEXT = 2 * 65536 + 256
# libpng writes 8 KiB IDAT chunks: a 32 MiB PNG holds about 4,000. 100,000 cost Pillow about 0.2 s.
MAX_PNG_CHUNKS = 100_000


def png_for_decoding(data: bytes) -> bytes:
    """`data` without the metadata chunks Pillow could refuse (see the module doc): `data` itself,
    uncopied, when it has none. Raises InvalidImage past MAX_PNG_CHUNKS. Chunks that cannot be
    walked (the file is cut short) are left as they are: Pillow says what is wrong with them."""
    has_metadata = any(kind in data for kind in METADATA_CHUNKS)
    kept, pos, chunks, dropped = [data[:8]], 8, 0, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InvalidImage(f"PNG has more than {MAX_PNG_CHUNKS} chunks; at most that many are decoded")
        if end > len(data):
            break
        if has_metadata and kind in METADATA_CHUNKS and not _is_small_exif(kind, data[pos + 8 : end - 4]):
            dropped = True
        elif has_metadata:
            kept.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    if not dropped:
        return data
    kept.append(data[pos:])
    return b"".join(kept)


def _is_small_exif(kind: bytes, body: bytes) -> bool:
    if not body.startswith(EXIF_TEXT_KEYWORD + b"\0"):
        return False
    text = body[len(EXIF_TEXT_KEYWORD) + 1 :]
    if kind == b"tEXt":
        return len(text) <= MAX_EXIF_TEXT
    if kind == b"zTXt" and text[:1] == b"\0":
        inflater = zlib.decompressobj()
        try:
            inflater.decompress(text[1:], MAX_EXIF_TEXT + 1)
        except zlib.error:
            return False
        return not inflater.unconsumed_tail
    return False
