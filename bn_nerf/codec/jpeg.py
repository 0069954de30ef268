"""Pillow's JPEG of an image, the yardstick `bn-inr encode` measures its files against: one quality's
file, and the lowest quality that reaches a PSNR."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bn_nerf.codec.compress import psnr_uint8

LOWEST_QUALITY, HIGHEST_QUALITY = 1, 95


def jpeg_point(target: np.ndarray, quality: int) -> tuple[int, int, float]:
    """(quality, bytes, PSNR) of Pillow's JPEG of `target` ((H, W, C) floats in [0, 1], rounded to
    8 bits), PSNR against `target` as a coded file's is measured."""
    pixels = np.round(np.clip(target, 0.0, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)).reshape(pixels.shape)
    return quality, buffer.tell(), psnr_uint8(decoded, target)


def jpeg_at_psnr(target: np.ndarray, psnr: float) -> tuple[int, int, float]:
    """`jpeg_point` of the lowest quality that reaches `psnr`, by bisection (PSNR grows with
    quality), or of the highest quality when none does."""
    lowest, highest = jpeg_point(target, LOWEST_QUALITY), jpeg_point(target, HIGHEST_QUALITY)
    if lowest[2] >= psnr or highest[2] < psnr:
        return lowest if lowest[2] >= psnr else highest
    # Invariant: `highest` reaches the PSNR, `lowest` does not.
    while highest[0] - lowest[0] > 1:
        middle = jpeg_point(target, (lowest[0] + highest[0]) // 2)
        if middle[2] >= psnr:
            highest = middle
        else:
            lowest = middle
    return highest
