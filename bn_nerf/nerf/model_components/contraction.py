"""Scene contraction for captures whose background reaches past any box: mip-NeRF 360's contraction,
with the max-norm as nerfacto uses it, so that the contracted space is a cube a grid can cover.

Positions are first expressed in units of the scene box (its centre at 0, its faces at +-1). Inside
the box they stay as they are; outside, a point at max-norm r > 1 moves to max-norm 2 - 1/r along
the same direction from the centre. All of space then fits in [-2, 2]^3: the box keeps its full
resolution and everything beyond -- walls, trees, the sky -- shares the shell between norms 1 and 2,
with resolution falling off as 1/r^2, as a camera inside the box sees it (disparity).

One `Contraction` serves the occupancy grid (which covers the contracted cube and looks its cells up
at contracted positions) and the field (which encodes contracted positions), so both see one space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# The contracted cube: positions in scene-box units land in [-CONTRACTED_EXTENT, CONTRACTED_EXTENT]^3.
CONTRACTED_EXTENT = 2.0


class Contraction(nn.Module):
    """Maps world positions into the contracted cube [-2, 2]^3 around `scene_aabb`, and back."""

    def __init__(self, scene_aabb: Tensor) -> None:
        super().__init__()
        aabb = scene_aabb.reshape(2, 3).float()
        self.centre: Tensor
        self.half_size: Tensor
        # Derived from the data on every load, so not part of a checkpoint.
        self.register_buffer("centre", (aabb[0] + aabb[1]) / 2, persistent=False)
        self.register_buffer("half_size", (aabb[1] - aabb[0]) / 2, persistent=False)

    @property
    def contracted_aabb(self) -> Tensor:
        """The cube contracted positions fill, as a [2, 3] box."""
        return torch.tensor([[-CONTRACTED_EXTENT] * 3, [CONTRACTED_EXTENT] * 3], device=self.centre.device)

    def forward(self, positions: Tensor) -> Tensor:
        unit = (positions - self.centre) / self.half_size
        norm = unit.abs().amax(-1, keepdim=True)
        outside = norm > 1
        # clamp: the formula is evaluated inside the box too, where torch.where discards it.
        safe_norm = norm.clamp(min=1)
        return torch.where(outside, (2 - 1 / safe_norm) * unit / safe_norm, unit)

    def inverse(self, contracted: Tensor) -> Tensor:
        """World positions of contracted ones (norm < 2; the shell's outer face is infinitely far)."""
        norm = contracted.abs().amax(-1, keepdim=True)
        outside = norm > 1
        shell = norm.clamp(min=1, max=CONTRACTED_EXTENT - 1e-6)
        unit = torch.where(outside, contracted / (shell * (2 - shell)), contracted)
        return unit * self.half_size + self.centre

    def distance_to(self, origins: Tensor, directions: Tensor, contracted: Tensor) -> Tensor:
        """[rays, K] distance along each ray at which its contracted coordinate reaches `contracted`
        [rays, K] (in [1, 2)), for rays that start inside the scene box: where the ray leaves the box of
        max-norm 1 / (2 - contracted), i.e. crosses the first of that box's faces."""
        norm = 1 / (2 - contracted)
        unit_origins = ((origins - self.centre) / self.half_size)[:, None, :]
        unit_directions = (directions / self.half_size)[:, None, :]
        sign = torch.where(unit_directions >= 0, 1.0, -1.0)
        safe = torch.where(unit_directions.abs() < 1e-12, sign * 1e-12, unit_directions)
        return ((sign * norm[..., None] - unit_origins) / safe).amin(-1).clamp(min=0)
