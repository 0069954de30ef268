"""DINER's learnable table: features stored at the vertices of one grid over the unit cube and read
with trilinear interpolation, in front of the (BN) MLP.

The table is dense -- one entry per grid vertex, no collisions -- when `resolution`^3 entries fit
the budget of 2^`log2_entries`, and hashed (instant-ngp's spatial hash of the vertex, modulo the
table size) when they do not. It runs through tiny-cuda-nn when tinycudann imports and CUDA is
present, and through torch otherwise; `FeatureTable.backend` says which, logged when the table is
built (bn-diner also prints it when training starts).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

Implementation = Literal["auto", "torch"]
# instant-ngp's hash primes (the first is 1, so one axis is not scrambled).
HASH_PRIMES = (1, 2654435761, 805459861)
# Eight corners of a cell as (dx, dy, dz) offsets.
CORNERS = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)])


def tinycudann_module():
    """The tinycudann module when it imports and CUDA is present, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        import tinycudann
    except ImportError:  # tiny-cuda-nn is an optional accelerator (built from source with CUDA)
        return None
    return tinycudann


class FeatureTable(nn.Module):
    """`features` learnable numbers at each vertex of a `resolution`^3 grid over [0, 1]^3.

    Args:
        resolution: vertices per axis (cells per axis + 1).
        features: numbers per entry.
        log2_entries: the table's budget; above it the grid is hashed into 2^log2_entries entries.
        init_scale: entries start uniform in [-init_scale, init_scale] (instant-ngp: 1e-4).
        implementation: "auto" takes tiny-cuda-nn when it can, "torch" never does.
    """

    def __init__(
        self,
        resolution: int,
        features: int,
        log2_entries: int,
        init_scale: float = 1e-4,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__()
        if resolution < 2 or features < 1:
            raise ValueError(f"a feature table needs resolution >= 2 and features >= 1, got {resolution}, {features}")
        self.resolution = resolution
        self.features = features
        vertices = resolution**3
        self.layout: Literal["dense", "hashed"] = "dense" if vertices <= 2**log2_entries else "hashed"
        self.entries = vertices if self.layout == "dense" else 2**log2_entries
        tinycudann = tinycudann_module() if implementation == "auto" else None
        if tinycudann is not None:
            self.backend = f"tcnn-{self.layout}"
            self.tcnn_encoding = tinycudann.Encoding(
                n_input_dims=3,
                encoding_config={
                    "otype": "Grid",
                    "type": "Dense" if self.layout == "dense" else "Hash",
                    "n_levels": 1,
                    "n_features_per_level": features,
                    "log2_hashmap_size": log2_entries,
                    # tiny-cuda-nn counts cells, and reads a level of N cells at N + 1 vertices.
                    "base_resolution": resolution - 1,
                    "per_level_scale": 1.0,
                    "interpolation": "Linear",
                },
            )
        else:
            self.backend = f"torch-{self.layout}"
            # Dense: a [features, z, y, x] volume that grid_sample reads; hashed: [entries, features].
            shape = (features, resolution, resolution, resolution) if self.layout == "dense" else (self.entries, features)
            self.table = nn.Parameter(torch.empty(shape).uniform_(-init_scale, init_scale))
            self.register_buffer("corners", CORNERS.clone(), persistent=False)
            self.register_buffer("primes", torch.tensor(HASH_PRIMES), persistent=False)
        logger.info("DINER table: %d^3 vertices x %d features, %s (%d entries)", resolution, features, self.backend, self.entries)

    def get_out_dim(self) -> int:
        return self.features

    def forward(self, positions: Tensor) -> Tensor:
        """Features at `positions` in [0, 1]^3 (any leading shape)."""
        leading = positions.shape[:-1]
        flat = positions.reshape(-1, 3)
        if self.backend.startswith("tcnn"):
            features = self.tcnn_encoding(flat).float()
        elif self.layout == "dense":
            # grid_sample reads (x, y, z) at [-1, 1] with the corners on the outermost vertices.
            grid = (flat * 2 - 1).to(self.table.dtype)[None, :, None, None, :]
            features = F.grid_sample(self.table[None], grid, mode="bilinear", align_corners=True)[0, :, :, 0, 0].T
        else:
            features = self._hashed_lookup(flat)
        return features.reshape(*leading, self.features)

    def smoothness_penalty(self, block: int) -> Tensor:
        """Mean squared difference between neighbouring entries along x, y and z inside a random
        `block`^3 block of a dense torch table: a total-variation prior estimated on one block a
        step, so that its cost does not grow with the table (slices, unlike gathers of scattered
        vertices, backpropagate without a scatter: 6.5 ms against 155 ms for 64K vertices of 96^3 x 8)."""
        if self.backend != "torch-dense":
            raise ValueError(f"a smoothness penalty needs a dense torch table, not {self.backend}")
        side = min(block, self.resolution)
        z, y, x = torch.randint(self.resolution - side + 1, (3,)).tolist()
        values = self.table[:, z:z + side, y:y + side, x:x + side]
        differences = (values.diff(dim=axis) for axis in (1, 2, 3))
        return sum(difference.square().mean() for difference in differences) / 3

    def _hashed_lookup(self, positions: Tensor) -> Tensor:
        scaled = positions.clamp(0, 1) * (self.resolution - 1)
        # The far face's vertices belong to the last cell, so no lookup runs past the grid.
        base = scaled.floor().clamp(max=self.resolution - 2)
        fraction = scaled - base
        vertices = base.long()[:, None, :] + self.corners  # [N, 8, 3]
        hashed = vertices * self.primes
        index = (hashed[..., 0] ^ hashed[..., 1] ^ hashed[..., 2]) % self.entries
        # Trilinear weights: per axis, the fraction toward the corner's side.
        weights = torch.where(self.corners.bool(), fraction[:, None, :], 1 - fraction[:, None, :]).prod(-1)
        return (self.table[index] * weights[..., None]).sum(1)
