"""What a JPEG will cost to decode, read from its markers alone: its frame, its scans, its end marker.

A progressive JPEG may hold any number of scans, and a decoder walks every block of the picture's
components once per scan, whatever the scan holds: a few hundred bytes of end-of-band runs make a
scan (tests/crafted_jpegs.py). So the work of a decode is `block_visits`, the sum over scans of the
blocks each one covers, known before a single coefficient is decoded. libjpeg-turbo decodes such
empty scans at about 20 ns a block visit on this project's CPU (docs/security.md).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

# Start-of-frame markers and the coding process each one names (ITU T.81, table B.1).
FRAME_PROCESSES = {
    0xC0: "baseline",
    0xC1: "extended sequential",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "differential sequential (hierarchical)",
    0xC6: "differential progressive (hierarchical)",
    0xC7: "differential lossless (hierarchical)",
    0xC9: "extended sequential, arithmetic-coded",
    0xCA: "progressive, arithmetic-coded",
    0xCB: "lossless, arithmetic-coded",
    0xCD: "differential sequential (hierarchical), arithmetic-coded",
    0xCE: "differential progressive (hierarchical), arithmetic-coded",
    0xCF: "differential lossless (hierarchical), arithmetic-coded",
}
# What libjpeg-turbo decodes to 8-bit samples: the DCT processes without hierarchy.
DECODED_PROCESSES = frozenset((0xC0, 0xC1, 0xC2, 0xC9, 0xCA))
PROGRESSIVE = frozenset((0xC2, 0xCA))
SOS, EOI = 0xDA, 0xD9
STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: no length field
# The marker that ends a scan's entropy-coded data: an FF followed by a byte that is neither 00 (a
# stuffed FF), a restart marker (D0-D7) nor another FF (fill). No `\xff+`: it backtracks, 15x slower.
END_OF_SCAN_DATA = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class JpegStructureError(ValueError):
    """The markers cannot be walked: a segment runs past the end, or a scan names no frame."""


@dataclass(frozen=True)
class JpegStructure:
    """A JPEG's frame and scans as its markers declare them.

    `frame_marker` is the SOFn marker (0xC0-0xCF), `precision` the bits per sample (8 or 12),
    `width`/`height` in pixels; `scans` the number of SOS segments; `block_visits` the 8x8 blocks
    that decoding all the scans walks, summed over scans; `has_end_marker` whether an EOI (FF D9)
    follows the last scan.
    """

    frame_marker: int
    precision: int
    width: int
    height: int
    scans: int
    block_visits: int
    has_end_marker: bool

    @property
    def process(self) -> str:
        return FRAME_PROCESSES.get(self.frame_marker, f"SOF marker {self.frame_marker:#04x}")


def jpeg_structure(data: bytes) -> JpegStructure:
    """Walk the markers of `data` (starting FF D8) without decoding any scan.

    Cost: one C-level regex search over each scan's entropy-coded data and a Python step per marker
    segment. Raises JpegStructureError where the markers cannot be walked.
    """
    pos = 2
    frame: Tuple[int, int, int, int, Dict[int, Tuple[int, int]]] | None = None
    scans, visits = 0, 0
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= len(data):
            return _structure(frame, scans, visits, False)
        marker, pos = data[found + 1], found + 2
        if marker == 0xFF:  # fill bytes before a marker
            pos = found + 1
            continue
        if marker == EOI:
            return _structure(frame, scans, visits, True)
        if marker in STANDALONE or marker == 0x00:
            continue
        if pos + 2 > len(data):
            raise JpegStructureError("a marker segment is cut short")
        (length,) = struct.unpack_from(">H", data, pos)
        segment = data[pos + 2 : pos + length]
        if length < 2 or len(segment) < length - 2:
            raise JpegStructureError(f"marker FF {marker:02X} segment is cut short")
        pos += length
        if marker in FRAME_PROCESSES:
            frame = _frame(marker, segment)
        elif marker == SOS:
            if frame is None:
                raise JpegStructureError("a scan comes before any frame header")
            scans += 1
            visits += _scan_blocks(frame, segment)
            end = END_OF_SCAN_DATA.search(data, pos)
            if end is None:
                return _structure(frame, scans, visits, False)
            pos = end.start()


def _structure(frame, scans: int, visits: int, has_end_marker: bool) -> JpegStructure:
    if frame is None:
        raise JpegStructureError("no frame header (SOFn)")
    marker, precision, width, height, _ = frame
    return JpegStructure(marker, precision, width, height, scans, visits, has_end_marker)


def _frame(marker: int, segment: bytes) -> Tuple[int, int, int, int, Dict[int, Tuple[int, int]]]:
    if len(segment) < 6:
        raise JpegStructureError("frame header is cut short")
    precision, height, width, count = struct.unpack_from(">BHHB", segment)
    components: Dict[int, Tuple[int, int]] = {}
    for i in range(count):
        if 6 + 3 * i + 3 > len(segment):
            raise JpegStructureError("frame header is cut short")
        ident, sampling = segment[6 + 3 * i], segment[7 + 3 * i]
        components[ident] = (max(1, sampling >> 4), max(1, sampling & 0x0F))
    return marker, precision, width, height, components


def _scan_blocks(frame, segment: bytes) -> int:
    """The 8x8 blocks one scan walks: each component's own blocks in a one-component scan, whole
    MCUs of the scan's components in an interleaved one (T.81, A.2)."""
    _, _, width, height, components = frame
    if not segment or not components:
        return 0
    idents: List[int] = [segment[1 + 2 * i] for i in range(segment[0]) if 1 + 2 * i < len(segment)]
    sampled = [components[i] for i in idents if i in components]
    if not sampled:
        return 0
    h_max = max(h for h, _ in components.values())
    v_max = max(v for _, v in components.values())
    if len(sampled) == 1:
        h, v = sampled[0]
        return _ceil(_ceil(width * h, h_max), 8) * _ceil(_ceil(height * v, v_max), 8)
    mcus = _ceil(width, 8 * h_max) * _ceil(height, 8 * v_max)
    return mcus * sum(h * v for h, v in sampled)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)
