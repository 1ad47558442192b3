"""Seeded mutations of valid images: truncations, byte flips, header edits, spliced and repeated
ranges. The decoder must answer each with a tensor or a typed request error, nothing else."""

import random
from typing import Dict, Iterator, Tuple

from image_variants import encode, sample

HEADER_BYTES = 64  # where format headers, dimensions and the first chunk or marker lengths live


def fuzz_seeds() -> Dict[str, bytes]:
    """Small valid files, so that hundreds of decodes stay fast."""
    cat = sample("chelsea.png").resize((96, 64))
    return {
        "jpeg": encode(cat, "JPEG", quality=85),
        "jpeg-progressive": encode(cat, "JPEG", quality=85, progressive=True),
        "png": encode(cat, "PNG"),
        "png-palette": encode(cat.convert("P"), "PNG"),
        "webp": encode(cat, "WEBP", quality=80),
    }


def mutate(data: bytes, rng: random.Random) -> Tuple[str, bytes]:
    """One random mutation of `data`, named for the report."""
    kind = rng.choice(("truncate", "flip", "header", "splice", "repeat"))
    out = bytearray(data)
    if kind == "truncate":
        cut = rng.randrange(1, len(out))
        return f"truncate@{cut}", bytes(out[:cut])
    if kind == "flip":
        spots = [rng.randrange(len(out)) for _ in range(rng.randint(1, 8))]
        for i in spots:
            out[i] ^= 1 << rng.randrange(8)
        return f"flip@{spots}", bytes(out)
    if kind == "header":  # dimensions, lengths and markers: set bytes to extremes
        spots = [rng.randrange(min(HEADER_BYTES, len(out))) for _ in range(rng.randint(1, 4))]
        for i in spots:
            out[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        return f"header@{spots}", bytes(out)
    start, length = rng.randrange(len(out)), rng.randint(1, 256)
    if kind == "splice":  # random bytes inserted mid-stream
        junk = bytes(rng.randrange(256) for _ in range(length))
        return f"splice@{start}+{length}", bytes(out[:start] + junk + out[start:])
    return f"repeat@{start}+{length}", bytes(out[: start + length] + out[start:])  # a range written twice


def mutations(count: int, seed: int = 0) -> Iterator[Tuple[str, bytes]]:
    rng = random.Random(seed)
    seeds = fuzz_seeds()
    names = sorted(seeds)
    for i in range(count):
        name = names[i % len(names)]
        how, data = mutate(seeds[name], rng)
        yield f"{name}:{how}", data
