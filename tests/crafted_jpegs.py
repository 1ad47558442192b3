"""Progressive JPEGs crafted to cost a decoder the most work for their size, written by hand.

Each is a valid grayscale progressive JPEG whose every coefficient is zero: one DC scan (one bit a
block) and then every AC band 1..63 sent as a first scan and 13 successive-approximation
refinements, each scan a handful of end-of-band runs. So a few hundred bytes a scan make a decoder
walk every block of the picture again: 883 scans of a 40 MP picture are 552 million block visits.
This is the shape of the "many scans" reports (libjpeg-turbo's tjbench `-maxscans`, its
TJPARAM_SCANLIMIT).
"""

import struct
from typing import List, Tuple

# Successive approximation: the first scan of a band sends bits 13 and up (Al=13, the most 8-bit
# samples need), each refinement one more bit, down to bit 0.
TOP_BIT = 13


class BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.bits = 0

    def write(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.bits += 1
            if self.bits == 8:
                self._byte(self.acc)
                self.acc, self.bits = 0, 0

    def _byte(self, byte: int) -> None:
        self.out.append(byte)
        if byte == 0xFF:
            self.out.append(0x00)  # byte stuffing

    def flush(self) -> bytes:
        if self.bits:
            self._byte((self.acc << (8 - self.bits)) | ((1 << (8 - self.bits)) - 1))  # pad with ones
            self.acc, self.bits = 0, 0
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _huffman_table(table_class: int, table_id: int, symbols: List[int], length: int) -> bytes:
    """A table whose symbols all have codes of `length` bits, in order: symbol i has code i."""
    counts = [0] * 16
    counts[length - 1] = len(symbols)
    return bytes([(table_class << 4) | table_id]) + bytes(counts) + bytes(symbols)


def _eob_runs(blocks: int) -> List[Tuple[int, int, int]]:
    """`blocks` as end-of-band runs: (symbol index r, extra bits value, extra bits length); a run of
    EOBr covers 2**r + extra blocks, r = 0..14."""
    runs = []
    while blocks:
        r = min(blocks.bit_length() - 1, 14)
        run = min(blocks, (1 << (r + 1)) - 1)
        runs.append((r, run - (1 << r), r))
        blocks -= run
    return runs


def many_scan_jpeg(width: int, height: int, bands: int = 63, top_bit: int = TOP_BIT) -> bytes:
    """A grayscale progressive JPEG of `width` x `height` with 1 + bands * (top_bit + 1) scans."""
    blocks = -(-width // 8) * -(-height // 8)
    quant = _segment(0xDB, b"\x00" + bytes([1] * 64))
    frame = _segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    dc_table = _segment(0xC4, _huffman_table(0, 0, [0], 1))  # category 0 (difference 0): code "0"
    ac_table = _segment(0xC4, _huffman_table(1, 0, [r << 4 for r in range(15)], 4))  # EOB0..EOB14
    parts = [b"\xff\xd8", quant, frame, dc_table, ac_table]
    # DC first scan: one zero difference a block.
    parts.append(_segment(0xDA, b"\x01\x01\x00" + bytes([0, 0, 0x00])))
    dc = BitWriter()
    for _ in range(blocks):
        dc.write(0, 1)
    parts.append(dc.flush())
    runs = _eob_runs(blocks)
    for band in range(1, bands + 1):
        for bit in range(top_bit, -1, -1):
            high = 0 if bit == top_bit else bit + 1
            parts.append(_segment(0xDA, b"\x01\x01\x00" + bytes([band, band, (high << 4) | bit])))
            ac = BitWriter()
            for r, extra, extra_length in runs:
                ac.write(r, 4)
                ac.write(extra, extra_length)
            parts.append(ac.flush())
    parts.append(b"\xff\xd9")
    return b"".join(parts)
