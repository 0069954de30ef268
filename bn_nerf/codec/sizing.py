"""The network size `bn-inr encode` picks when none is given: stored weights that grow with the pixels.

The paper's image nets are sized for Kodak's 768x512 photos; on a 128x128 photo its 10x28 net made
a 4.89 bpp file (24.2 dB) where JPEG at quality 92 took 4.66 bpp for 30.9 dB. A coordinate network
is competitive only at low rates: on 4 Kodak photos at 384x256 (BENCHMARKS.md "Image codec") BN+PE
5x20 files of 0.22-0.25 bpp beat JPEG at equal bytes on each photo, and JPEG led every network above
0.4 bpp. So the default net is the largest whose file is estimated to fit DEFAULT_BITS_PER_PIXEL of
the image: a photo of a sixth of the pixels gets about a sixth of the coded bits. On a small photo
JPEG's fixed cost (headers and tables, about 600 bytes) puts even its smallest file far above that
rate, so there the default aims just below JPEG's smallest file instead (`default_bits_per_pixel`).
`--depth`/`--width` (or a --config) fix the size; `--target-bpp` replaces the rate it is chosen for.
"""

from __future__ import annotations

import math

import numpy as np

from bn_nerf.codec.compress import decoder_config, smallest_file_bytes
from bn_nerf.codec.decode import IN_DIM
from bn_nerf.codec.jpeg import LOWEST_QUALITY, jpeg_point
from bn_nerf.networks import NetworkConfig, build_from_config, stored_value_count

# Where the default file should land: inside the region where the codec beat JPEG on Kodak.
DEFAULT_BITS_PER_PIXEL = 0.25
# The least rate a default aims at, as a share of JPEG's smallest file (quality 1) of the photo. On
# a 128x128 photo JPEG's smallest file is 0.55 bpp (18.57 dB on scikit-image's astronaut); bn+pe
# nets of 0.33-0.39 bpp reached 18.45-19.13 dB there after 2,000 iterations (2x11, 3x10, 4x9),
# while 0.22 bpp (a 2x7 net, 50,000 iterations) stopped at 16.98 dB.
SHARE_OF_SMALLEST_JPEG = 0.6
# Coded bits per stored weight beyond the header (entropy-coded, at the automatic bit depth) grow
# slowly with the net, whose automatic depth is finer the more weights there are: bn+pe files
# measured 6.9-8.0 on 350-690-weight nets (a 128x128 photo), 8.6 on 5x20 (2,603 weights) and 9.2 on
# 10x28 and 10x40 (8,599 and 16,603) on Kodak at 384x256, 8.8 on 8x36 (10,983) on a 768x512 photo.
# Least squares over those ten files: this many bits at REFERENCE_WEIGHTS weights, BITS_PER_DOUBLING
# more each time the count doubles (off by at most 0.7 bits on any of them, a constant by 1.3). An
# estimate, not a promise: the automatic depth follows the fitted weights.
BITS_PER_WEIGHT_AT_REFERENCE, REFERENCE_WEIGHTS, BITS_PER_DOUBLING = 7.7, 640, 0.33
# The paper's image nets are about four times as wide as deep (5x20, 10x40, 13x49), so depth grows
# with width along that line, up to the paper's deepest; past it only the width grows.
WIDTH_PER_DEPTH = 4
SMALLEST_DEPTH = 2
DEEPEST = 13
NARROWEST = 4


def default_bits_per_pixel(image: np.ndarray) -> float:
    """The rate a default net is sized for on `image` ((H, W, C) in [0, 1]): DEFAULT_BITS_PER_PIXEL,
    or SHARE_OF_SMALLEST_JPEG of JPEG's smallest file where that is more."""
    _, smallest_jpeg_bytes, _ = jpeg_point(image, LOWEST_QUALITY)
    return max(DEFAULT_BITS_PER_PIXEL, SHARE_OF_SMALLEST_JPEG * smallest_jpeg_bytes * 8 / (image.shape[0] * image.shape[1]))


def estimated_bits_per_weight(weights: int) -> float:
    return BITS_PER_WEIGHT_AT_REFERENCE + BITS_PER_DOUBLING * math.log2(weights / REFERENCE_WEIGHTS)


def estimated_file_bits(config: NetworkConfig, method: str, channels: int, height: int, width: int,
                        depth: int, hidden_width: int) -> float:
    """A file's expected size in bits: its exact header plus every stored weight at
    `estimated_bits_per_weight`."""
    plain = build_from_config(decoder_config(config, method), IN_DIM, channels, depth, hidden_width)
    header = smallest_file_bytes(config, method, channels, height, width, depth, hidden_width)
    weights = stored_value_count(plain)
    return header * 8 + weights * estimated_bits_per_weight(weights)


def default_network_size(config: NetworkConfig, method: str, channels: int, height: int, width: int,
                         bits_per_pixel: float = DEFAULT_BITS_PER_PIXEL, depth: int | None = None,
                         hidden_width: int | None = None) -> tuple[int, int]:
    """(depth, width) of the largest net whose file is estimated to fit `bits_per_pixel` of an image
    of height x width pixels; a given depth or width is kept and only the other one chosen. An image
    too small for even the smallest net gets the smallest (its file then exceeds the rate)."""
    budget_bits = bits_per_pixel * height * width

    def fits(candidate_depth: int, candidate_width: int) -> bool:
        return estimated_file_bits(config, method, channels, height, width, candidate_depth,
                                   candidate_width) <= budget_bits

    if depth is None and hidden_width is None:
        depth = SMALLEST_DEPTH
        while depth < DEEPEST and fits(depth + 1, WIDTH_PER_DEPTH * (depth + 1)):
            depth += 1
    if hidden_width is None:
        hidden_width = NARROWEST
        while fits(depth, hidden_width + 1):
            hidden_width += 1
    if depth is None:
        depth = 1
        while depth < DEEPEST and fits(depth + 1, hidden_width):
            depth += 1
    return depth, hidden_width
