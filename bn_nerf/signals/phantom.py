"""An analytic 3D head phantom with fine structure, the MRI task's embedded default.

Coarse anatomy comes from ellipsoids (skull, brain, ventricles, lesions, in the spirit of the
3D Shepp-Logan phantom); fine structure, which is what separates methods with and without
spectral bias, comes from a cluster of small spheres of decreasing radius and a stack of thin
slabs whose spacing shrinks towards the Nyquist limit of a 96^3 grid. Defined on [-1, 1]^3, so
it can be sampled at any resolution; intensities lie in [0, 1].
"""

from __future__ import annotations

import numpy as np

# (centre x, y, z; semi-axes a, b, c; rotation about z in degrees; added intensity)
ELLIPSOIDS = (
    ((0.0, 0.0, 0.0), (0.69, 0.92, 0.81), 0.0, 0.8),        # skull
    ((0.0, -0.0184, 0.0), (0.6624, 0.874, 0.78), 0.0, -0.6),  # brain (0.2 inside the skull)
    ((0.22, 0.0, 0.0), (0.11, 0.31, 0.22), -18.0, 0.3),       # right ventricle
    ((-0.22, 0.0, 0.0), (0.16, 0.41, 0.28), 18.0, 0.3),       # left ventricle
    ((0.0, 0.35, -0.15), (0.21, 0.25, 0.41), 0.0, 0.2),
    ((0.0, 0.1, 0.25), (0.046, 0.046, 0.05), 0.0, 0.4),
    ((-0.08, -0.605, 0.0), (0.046, 0.023, 0.05), 0.0, 0.3),
    ((0.06, -0.605, 0.0), (0.023, 0.046, 0.05), 0.0, 0.3),
)
# Small spheres: (centre, radius); radii fall to about one voxel of a 96^3 grid (2/96 ~ 0.021).
SPHERES = tuple(((-0.35 + 0.1 * i, -0.35, 0.4), 0.05 - 0.006 * i) for i in range(6))
# Thin slabs across y, at x > 0.25 inside the brain, spacing from 0.08 down to 0.03.
SLAB_EDGES = np.cumsum([0.0, 0.04, 0.04, 0.03, 0.03, 0.025, 0.025, 0.02, 0.02, 0.015, 0.015])


def head_phantom(size: int) -> np.ndarray:
    """(size, size, size) float32 in [0, 1], axes (x, y, z) on voxel centres in [-1, 1]."""
    axis = np.linspace(-1.0, 1.0, size)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    volume = np.zeros((size, size, size))
    for (cx, cy, cz), (a, b, c), degrees, intensity in ELLIPSOIDS:
        angle = np.deg2rad(degrees)
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        volume[(u / a) ** 2 + (v / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0] += intensity
    for (cx, cy, cz), radius in SPHERES:
        volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius ** 2] = 0.9
    slab_start = 0.25
    for index in range(0, len(SLAB_EDGES) - 1, 2):
        low, high = slab_start + SLAB_EDGES[index], slab_start + SLAB_EDGES[index + 1]
        inside = (x >= low) & (x < high) & (np.abs(y) < 0.3) & (np.abs(z + 0.2) < 0.2)
        volume[inside] = 0.7
    return np.clip(volume, 0.0, 1.0).astype(np.float32)
