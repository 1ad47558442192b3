"""Phone-sized photos: a 12-megapixel JPEG made from each sample, and what reduced-scale decoding costs in accuracy."""

import io
import math
from typing import Any, Dict, Tuple

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
