"""Phone-sized photos: a 12-megapixel JPEG made from each sample, and what reduced-scale decoding costs in accuracy."""

import io
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image


def jpeg_of(image: Image.Image, megapixels: float, quality: int = 90, seed: int = 0) -> bytes:
    """`image` resized to about `megapixels`, with a little sensor-like noise so that it compresses like a
    real photo (a smooth upscale would make an unrealistically small file)."""
    width, height = image.size
    scale = math.sqrt(megapixels * 1e6 / (width * height))
    resized = image.convert("RGB").resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    pixels = np.asarray(resized, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 3.0, pixels.shape)
    noisy = Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def reduced_vs_full_decode(handler: Any, context: Any, jpeg: bytes) -> Tuple[bool, float, float, Dict[str, float]]:
    """The handler's answer (JPEG decoded at reduced scale) against the same model on a full-resolution
    decode: (same top-1, largest probability difference over the answered labels, the full-resolution
    lead of the top-1 over the runner-up, the answer)."""
    from image_decoding import decode_image

    answer = handler.handle([{"body": bytearray(jpeg)}], context.with_requests([{}]))[0]
    full = decode_image(jpeg, handler.settings.max_image_pixels, min_side=None)
    with torch.no_grad():
        probabilities = handler.model(full.unsqueeze(0))[0]
    full_answer = {name: p for name, p in zip(handler.class_names, probabilities.tolist(), strict=True)}
    first, second = probabilities.topk(2).values.tolist()
    same_top1 = next(iter(answer)) == max(full_answer, key=full_answer.get)
    difference = max(abs(p - full_answer[label]) for label, p in answer.items())
    return same_top1, difference, first - second, answer


@dataclass(frozen=True)
class DraftTradeoff:
    """What one `jpeg_draft_factor` costs and moves on 12 MP JPEGs, in process on one thread."""

    factor: int
    decoded_size: str  # the first photo as decoded, e.g. "1062x707"
    decode_ms: float  # median over photos and rounds
    handle_ms: float  # the whole in-process path (decode, preprocess, classify), median
    agreement: Tuple[Tuple[bool, float, float, Dict[str, float]], ...]  # reduced_vs_full_decode, per photo

    @property
    def difference(self) -> float:
        """The largest probability difference from a full-resolution decode, over the photos."""
        return max(difference for _, difference, _, _ in self.agreement)

    @property
    def same_top1(self) -> int:
        """Photos whose top-1 is that of a full-resolution decode."""
        return sum(same for same, _, _, _ in self.agreement)


def median_ms(action: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def handle_ms(handler: Any, context: Any, jpegs: Sequence[bytes], rounds: int) -> float:
    """Median in-process time of one request: decode, preprocess and classify."""
    requests = [[{"body": bytearray(jpeg)}] for jpeg in jpegs]
    return statistics.median(
        median_ms(lambda r=request: handler.handle(r, context.with_requests([{}])), rounds) for request in requests
    )


def decode_ms(handler: Any, jpegs: Sequence[bytes], rounds: int) -> float:
    """Median time of the handler's decode alone, at its draft factor."""
    from image_decoding import decode_image

    limit, min_side = handler.settings.max_image_pixels, handler.decode_min_side
    return statistics.median(median_ms(lambda j=jpeg: decode_image(j, limit, min_side), rounds) for jpeg in jpegs)


def draft_tradeoffs(pt_path: Path, jpegs: Sequence[bytes], factors: Sequence[int], rounds: int) -> List[DraftTradeoff]:
    """Each factor's decode time, whole-path time and distance from a full-resolution decode."""
    from image_decoding import decode_image

    from benchmarks.in_process import load_handler

    tradeoffs = []
    for factor in factors:
        handler, context = load_handler(pt_path, {"jpeg_draft_factor": factor, "threads_per_worker": 1})
        _, height, width = decode_image(jpegs[0], handler.settings.max_image_pixels, handler.decode_min_side).shape
        tradeoffs.append(
            DraftTradeoff(
                factor,
                f"{width}x{height}",
                decode_ms(handler, jpegs, rounds),
                handle_ms(handler, context, jpegs, rounds),
                tuple(reduced_vs_full_decode(handler, context, jpeg) for jpeg in jpegs),
            )
        )
    return tradeoffs
