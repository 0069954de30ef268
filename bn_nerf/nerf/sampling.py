"""Empty-space skipping: an occupancy grid over the scene box, kept up to date from the field's own
density during training (as instant-ngp does), that drops samples in empty cells before any network
runs. Samples march along each ray at a fixed step inside the box; a sample is kept when the cell
holding its midpoint is occupied.

The grid is nerfacc's `OccGridEstimator` on every device: its state and its update (every
`update_every` steps, occupancy = density x step size at a random point of each evaluated cell --
every cell while warming up, then a quarter of them at random plus as many occupied ones --
blended as max(decayed old value, new value), a cell being occupied above min(mean occupancy,
threshold)) are plain torch. Only its ray marching needs nerfacc's CUDA kernel; elsewhere the same
marching runs in torch. So a checkpoint trained on a GPU renders on a laptop, and `OccupancyGrid`
is the one interface the model sees.

Samples come packed: one row per kept sample with its ray's index, rays in order. `packed_weights`
turns densities into volume-rendering weights on any device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DensityAt = Callable[[Tensor], Tensor]


@dataclass
class PackedSamples:
    """Kept samples of a ray batch: [S] ray index (non-decreasing), interval start and end along the ray."""

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor


@dataclass(frozen=True)
class OccupancyGridSettings:
    resolution: int = 64
    """Cells per axis over the scene box."""
    render_step_size: float = 0.01
    """Distance between samples along a ray, in world units."""
    update_every: int = 16
    """Training steps between grid updates."""
    warmup_steps: int = 256
    """Steps during which every cell is re-evaluated at each update."""
    occupancy_threshold: float = 0.01
    """A cell is occupied when its density x step size exceeds min(this, the grid's mean)."""
    decay: float = 0.95
    """Old occupancy is decayed by this before the max with the new value."""


def ray_box_interval(origins: Tensor, directions: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distance of each ray through the box (exit < entry where it misses)."""
    with torch.no_grad():
        safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
        lower = (aabb[0] - origins) / safe
        upper = (aabb[1] - origins) / safe
        entry = torch.minimum(lower, upper).amax(-1)
        exit_ = torch.maximum(lower, upper).amin(-1)
    return entry, exit_


def packed_weights(t_starts: Tensor, t_ends: Tensor, densities: Tensor, ray_indices: Tensor, num_rays: int) -> Tensor:
    """Volume-rendering weights T_i (1 - exp(-sigma_i delta_i)) of packed samples, differentiable.

    The transmittance's exclusive sum restarts at each ray: a running sum over all samples (in float64,
    so that thousands of rays add no rounding to one another) minus its value at the ray's first sample.
    """
    optical_depth = densities * (t_ends - t_starts)
    running = torch.cumsum(optical_depth.double(), 0) - optical_depth.double()
    counts = torch.bincount(ray_indices, minlength=num_rays)
    first_of_ray = torch.cumsum(counts, 0) - counts
    exclusive = (running - running[first_of_ray[ray_indices]]).to(optical_depth.dtype)
    return torch.exp(-exclusive) * (1 - torch.exp(-optical_depth))


class OccupancyGrid(nn.Module):
    """Which cells of the scene box hold anything, and the samples of a ray batch that fall in them."""

    def __init__(self, aabb: Tensor, settings: OccupancyGridSettings) -> None:
        super().__init__()
        from nerfacc import OccGridEstimator

        self.settings = settings
        self.estimator = OccGridEstimator(roi_aabb=aabb.reshape(-1).float(), resolution=settings.resolution, levels=1)
        # Every cell occupied until the first update has seen the field.
        self.estimator.binaries.fill_(True)
        self._marcher: Optional[str] = None

    @property
    def occupied(self) -> Tensor:
        """[resolution^3] booleans, x slowest, z fastest."""
        return self.estimator.binaries.reshape(-1)

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def reset(self) -> None:
        """Every cell occupied again: the recovery when the grid has emptied."""
        self.estimator.occs.zero_()
        self.estimator.binaries.fill_(True)

    def update(self, step: int, density_at: DensityAt) -> None:
        """Refresh the grid from the field's density every `update_every` training steps."""
        settings = self.settings
        self.estimator.update_every_n_steps(
            step=step,
            occ_eval_fn=lambda points: density_at(points) * settings.render_step_size,
            occ_thre=settings.occupancy_threshold,
            ema_decay=settings.decay,
            warmup_steps=settings.warmup_steps,
            n=settings.update_every,
        )

    @property
    def marcher(self) -> str:
        """"nerfacc-cuda" or "torch": what marches the rays of this grid's device."""
        if self._marcher is None:
            cuda = self.estimator.occs.is_cuda and nerfacc_kernels_load()
            self._marcher = "nerfacc-cuda" if cuda else "torch"
        return self._marcher

    @torch.no_grad()
    def sample(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, stratified: bool) -> PackedSamples:
        """Samples every `render_step_size` from `near` (jittered by up to one step when `stratified`)
        to `far`, inside the box, kept where the grid is occupied."""
        near, far = near.reshape(-1), far.reshape(-1)
        if self.marcher == "nerfacc-cuda":
            ray_indices, t_starts, t_ends = self.estimator.sampling(
                origins.contiguous(), directions.contiguous(), t_min=near.contiguous(), t_max=far.contiguous(),
                render_step_size=self.settings.render_step_size, stratified=stratified,
                alpha_thre=0.0, early_stop_eps=0.0,
            )
            return PackedSamples(ray_indices.long(), t_starts, t_ends)
        return self._march_in_torch(origins, directions, near, far, stratified)

    def _march_in_torch(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, stratified: bool) -> PackedSamples:
        step = self.settings.render_step_size
        aabb = self.estimator.aabbs[0].reshape(2, 3)
        entry, exit_ = ray_box_interval(origins, directions, aabb)
        start = near + torch.rand_like(near) * step if stratified else near
        # Whole steps from the ray's start up to the box, so sample positions do not depend on the box.
        start = start + torch.ceil(((entry - start) / step).clamp(min=0)) * step
        end = torch.minimum(exit_, far)
        longest = float((end - start).max().clamp(min=0)) if len(start) else 0.0
        count = max(math.ceil(longest / step), 1)
        t_starts = start[:, None] + step * torch.arange(count, device=origins.device, dtype=origins.dtype)
        t_ends = t_starts + step
        midpoints = origins[:, None, :] + directions[:, None, :] * ((t_starts + t_ends) / 2)[..., None]
        resolution = self.settings.resolution
        cell = ((midpoints - aabb[0]) / (aabb[1] - aabb[0]) * resolution).long().clamp(0, resolution - 1)
        index = (cell[..., 0] * resolution + cell[..., 1]) * resolution + cell[..., 2]
        keep = (t_ends <= end[:, None]) & self.occupied[index]
        ray_indices, column = keep.nonzero(as_tuple=True)
        return PackedSamples(ray_indices, t_starts[ray_indices, column], t_ends[ray_indices, column])


def nerfacc_kernels_load() -> bool:
    """Whether nerfacc's CUDA kernels run here (they build or load on first use and need CUDA)."""
    if not torch.cuda.is_available():
        return False
    try:
        from nerfacc.cuda._backend import _C  # the import builds or loads the extension
    except Exception as error:  # a missing toolchain surfaces as many kinds of error
        logger.warning("nerfacc's CUDA kernels do not load (%s); rays are marched in torch", error)
        return False
    return _C is not None
