"""The network size `bn-inr encode` picks when none is given: stored weights in proportion to pixels.

The paper's image nets are sized for Kodak's 768x512 photos; on a 128x128 photo its 10x28 net made
a 4.89 bpp file (24.2 dB) where JPEG at quality 92 took 4.66 bpp for 30.9 dB. A coordinate network
is competitive only at low rates: on 4 Kodak photos at 384x256 (BENCHMARKS.md "Image codec") BN+PE
5x20 files of 0.22-0.25 bpp beat JPEG at equal bytes on each photo, and JPEG led every network above
0.4 bpp. So the default net is the largest whose file is estimated to fit DEFAULT_BITS_PER_PIXEL of
the image, and a photo of a sixth of the pixels gets a sixth of the weights. `--depth`/`--width`
(or a --config) fix the size; `--target-bpp` replaces the rate the size is chosen for.
"""

from __future__ import annotations

from bn_nerf.codec.compress import decoder_config, smallest_file_bytes
from bn_nerf.codec.decode import IN_DIM
from bn_nerf.networks import NetworkConfig, build_from_config, stored_value_count

# Where the default file should land: inside the region where the codec beat JPEG on Kodak.
DEFAULT_BITS_PER_PIXEL = 0.25
# Coded bits per stored weight at the automatic bit depth (10-11 bits a weight, entropy-coded):
# BN+PE 5x20 files on Kodak at 384x256 averaged 8.6 bits a weight beyond their header, 5x5 to 5x8
# nets on a 128x128 photo 7.8-7.9. An estimate: the automatic depth follows the fitted weights.
ESTIMATED_BITS_PER_WEIGHT = 8.5
# The paper's image nets are about four times as wide as deep (5x20, 10x40, 13x49), so depth grows
# with width along that line, up to the paper's deepest; past it only the width grows.
WIDTH_PER_DEPTH = 4
SMALLEST_DEPTH = 2
DEEPEST = 13
NARROWEST = 4


def estimated_file_bits(config: NetworkConfig, method: str, channels: int, height: int, width: int,
                        depth: int, hidden_width: int) -> float:
    """A file's expected size in bits: its exact header plus every stored weight at
    ESTIMATED_BITS_PER_WEIGHT."""
    plain = build_from_config(decoder_config(config, method), IN_DIM, channels, depth, hidden_width)
    header = smallest_file_bytes(config, method, channels, height, width, depth, hidden_width)
    return header * 8 + stored_value_count(plain) * ESTIMATED_BITS_PER_WEIGHT


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
