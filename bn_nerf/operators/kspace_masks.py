"""Which 3D Fourier coefficients an MRI scan measures: centred boolean masks (zero frequency at
index size // 2 along each axis), drawn reproducibly from a seed.

- full: every coefficient (the problem is then pure representation).
- random: each coefficient with the same probability `fraction`.
- variable-density (the default): probability falling with distance from the centre as
  (1 - r)^2, r the radius over the Nyquist radius, scaled so that about `fraction` of all
  coefficients are kept. The centre, where most of an image's energy lies, is sampled fully,
  and high frequencies sparsely, as in compressed-sensing MRI.
- radial: straight spokes through the centre in directions spread evenly over the sphere
  (a Fibonacci lattice), as many as it takes to cover `fraction` of k-space.
"""

from __future__ import annotations

import math

import numpy as np

MASK_KINDS = ("variable-density", "random", "radial", "full")


def _centred_frequencies(shape: tuple[int, ...]) -> list[np.ndarray]:
    return np.meshgrid(*[np.arange(size) - size // 2 for size in shape], indexing="ij")


def _variable_density(shape, fraction: float, rng: np.random.Generator) -> np.ndarray:
    frequencies = _centred_frequencies(shape)
    radius = np.sqrt(sum((k / (size / 2)) ** 2 for k, size in zip(frequencies, shape)))
    falloff = np.clip(1.0 - radius, 0.0, None) ** 2
    # Find the scale whose clipped probabilities average to `fraction` (bisection: the mean rises with it).
    low, high = 0.0, 1.0
    while np.minimum(high * falloff, 1.0).mean() < fraction and high < 1e12:
        high *= 2.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if np.minimum(middle * falloff, 1.0).mean() < fraction else (low, middle)
    return rng.random(shape) < np.minimum(high * falloff, 1.0)


def _spokes(shape, count: int) -> np.ndarray:
    """Mask of `count` spokes through the centre, directions on a Fibonacci half-sphere."""
    index = np.arange(count) + 0.5
    z = 1.0 - index / count  # half-sphere: a spoke already covers its opposite direction
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * index
    ring = np.sqrt(1.0 - z ** 2)
    directions = np.stack([z, ring * np.cos(azimuth), ring * np.sin(azimuth)], axis=1)
    reach = max(shape) / 2
    steps = np.arange(-reach, reach + 0.5, 0.5)
    points = np.rint(directions[:, None, :] * steps[None, :, None]).astype(np.int64).reshape(-1, 3)
    centre = np.array([size // 2 for size in shape])
    points = points + centre
    inside = np.all((points >= 0) & (points < np.array(shape)), axis=1)
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(points[inside].T)] = True
    return mask


def _radial(shape, fraction: float) -> np.ndarray:
    low, high = 1, 1
    while _spokes(shape, high).mean() < fraction and high < 16 * int(np.prod(shape)):
        low, high = high, high * 2
    while high - low > 1:  # fewest spokes that reach the fraction
        middle = (low + high) // 2
        low, high = (middle, high) if _spokes(shape, middle).mean() < fraction else (low, middle)
    return _spokes(shape, high)


def sampling_mask(kind: str, shape: tuple[int, int, int], fraction: float, seed: int = 0) -> np.ndarray:
    """A centred boolean k-space mask of `kind` keeping about `fraction` of the coefficients."""
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown k-space mask '{kind}'; choose from {', '.join(MASK_KINDS)}")
    if kind == "full":
        return np.ones(shape, dtype=bool)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the sampled fraction of k-space must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random(shape) < fraction
    if kind == "radial":
        return _radial(shape, fraction)
    return _variable_density(shape, fraction, rng)
