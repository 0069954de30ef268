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

For a capture whose background reaches past the scene box the grid covers contracted space instead
(contraction.py: the box at full resolution, all of space beyond it in a shell): rays are
marched at the fixed step inside the box and then at a fixed step of the *contracted* coordinate
across the shell -- samples ever further apart in the world, evenly spread in disparity, as mip-NeRF
360 and nerfacto space theirs -- and a sample is kept when the cell holding its contracted midpoint
is occupied. nerfacc's kernel marches straight lines through a world-space grid, so this marching
runs in torch on every device.

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

from bn_nerf.nerf.distributed.processes import (agree_random_states, copy_from_first_process, evaluated_in_shares,
                                                random_states_agree, world_size)
from bn_nerf.nerf.model_components.contraction import Contraction

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
    """Which cells of the scene box (or, with a contraction, of the contracted cube around it) hold
    anything, and the samples of a ray batch that fall in them."""

    def __init__(self, aabb: Tensor, settings: OccupancyGridSettings, contraction: Optional[Contraction] = None) -> None:
        super().__init__()
        from nerfacc import OccGridEstimator

        self.settings = settings
        self.contraction = contraction
        self.scene_aabb: Tensor
        self.register_buffer("scene_aabb", aabb.reshape(2, 3).float().clone(), persistent=False)
        grid_aabb = contraction.contracted_aabb if contraction is not None else self.scene_aabb
        self.estimator = OccGridEstimator(roi_aabb=grid_aabb.reshape(-1), resolution=settings.resolution, levels=1)
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
        """Refresh the grid from the field's density every `update_every` training steps.

        On several processes (torch.distributed) that keep their random states agreeing, every one
        draws the same cells and points, evaluates the density at its share of them, and the shares
        are summed into the whole on each: the same grid everywhere, for 1/processes of the
        evaluation. Where their states are their own, each refreshes alone and takes the first
        process's grid."""
        settings = self.settings
        to_world = self.contraction.inverse if self.contraction is not None else (lambda points: points)

        def occupancy_at(points: Tensor) -> Tensor:
            return density_at(to_world(points)) * settings.render_step_size

        if random_states_agree() and step % settings.update_every == 0:
            agree_random_states()
        self.estimator.update_every_n_steps(
            step=step,
            occ_eval_fn=evaluated_in_shares(occupancy_at) if random_states_agree() else occupancy_at,
            occ_thre=settings.occupancy_threshold,
            ema_decay=settings.decay,
            warmup_steps=settings.warmup_steps,
            n=settings.update_every,
        )
        if world_size() > 1 and not random_states_agree() and step % settings.update_every == 0:
            copy_from_first_process(self.estimator.occs, self.estimator.binaries)

    @property
    def marcher(self) -> str:
        """"nerfacc-cuda" or "torch": what marches the rays of this grid's device."""
        if self._marcher is None:
            cuda = self.contraction is None and self.estimator.occs.is_cuda and nerfacc_kernels_load()
            self._marcher = "nerfacc-cuda" if cuda else "torch"
        return self._marcher

    @torch.no_grad()
    def sample(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, stratified: bool) -> PackedSamples:
        """Samples every `render_step_size` from `near` (jittered by up to one step when `stratified`)
        to `far` inside the scene box -- and, with a contraction, on across the shell beyond it --
        kept where the grid is occupied."""
        near, far = near.reshape(-1), far.reshape(-1)
        if self.marcher == "nerfacc-cuda":
            ray_indices, t_starts, t_ends = self.estimator.sampling(
                origins.contiguous(), directions.contiguous(), t_min=near.contiguous(), t_max=far.contiguous(),
                render_step_size=self.settings.render_step_size, stratified=stratified,
                alpha_thre=0.0, early_stop_eps=0.0,
            )
            return PackedSamples(ray_indices.long(), t_starts, t_ends)
        t_starts, t_ends = self._box_intervals(origins, directions, near, far, stratified)
        if self.contraction is not None:
            shell_starts, shell_ends = self._shell_intervals(origins, directions, near, far, stratified)
            t_starts, t_ends = torch.cat([t_starts, shell_starts], 1), torch.cat([t_ends, shell_ends], 1)
        # The grid is looked up at the intervals each ray really has, not at the padding of the
        # [rays, longest ray] layout (on a Blender view, most of it).
        ray_indices, column = (t_ends > t_starts).nonzero(as_tuple=True)
        t_starts, t_ends = t_starts[ray_indices, column], t_ends[ray_indices, column]
        midpoints = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
        keep = self.occupied[self._cell_index(midpoints)]
        return PackedSamples(ray_indices[keep], t_starts[keep], t_ends[keep])

    def _box_intervals(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
                       stratified: bool) -> tuple[Tensor, Tensor]:
        """[rays, K] intervals of one step from `near` to `far` inside the scene box (empty where
        end <= start)."""
        step = self.settings.render_step_size
        entry, exit_ = ray_box_interval(origins, directions, self.scene_aabb)
        start = near + torch.rand_like(near) * step if stratified else near
        # Whole steps from the ray's start up to the box, so sample positions do not depend on the box.
        start = start + torch.ceil(((entry - start) / step).clamp(min=0)) * step
        end = torch.minimum(exit_, far)
        longest = float((end - start).max().clamp(min=0)) if len(start) else 0.0
        count = max(math.ceil(longest / step), 1)
        t_starts = start[:, None] + step * torch.arange(count, device=origins.device, dtype=origins.dtype)
        t_ends = t_starts + step
        return t_starts, torch.where(t_ends <= end[:, None], t_ends, t_starts)

    def _shell_intervals(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
                         stratified: bool) -> tuple[Tensor, Tensor]:
        """[rays, K] intervals across the contracted shell, of equal length in the contracted
        coordinate 2 - 1/r (r: max-norm in scene-box units), from the box's face to r = far's scale;
        rays are assumed to start inside the box, as a capture's normalized cameras do."""
        assert self.contraction is not None
        half_size = float(self.contraction.half_size.mean())
        count = max(math.ceil(half_size / self.settings.render_step_size), 1)
        # The last edge stops short of the shell's outer face, which is infinitely far.
        outermost = 2 - 1 / max(float(far.max()) / half_size, 1 + 1e-3)
        offsets = torch.arange(count + 1, device=origins.device, dtype=origins.dtype)
        if stratified:
            offsets = offsets[None, :] + torch.rand(len(origins), 1, device=origins.device, dtype=origins.dtype) - 1
        else:
            offsets = offsets[None, :].expand(len(origins), -1)
        contracted = 1 + offsets.clamp(min=0) * (outermost - 1) / count
        edges = self.contraction.distance_to(origins, directions, contracted)
        t_starts = torch.maximum(edges[:, :-1], near[:, None])
        t_ends = torch.minimum(edges[:, 1:], far[:, None])
        return t_starts, torch.where(t_ends > t_starts, t_ends, t_starts)

    def _cell_index(self, positions: Tensor) -> Tensor:
        """Flat index of the grid cell holding each world position."""
        if self.contraction is not None:
            positions = self.contraction(positions)
        aabb = self.estimator.aabbs[0].reshape(2, 3)
        resolution = self.settings.resolution
        cell = ((positions - aabb[0]) / (aabb[1] - aabb[0]) * resolution).long().clamp(0, resolution - 1)
        return (cell[..., 0] * resolution + cell[..., 1]) * resolution + cell[..., 2]


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


@dataclass
class Composited:
    """What front-to-back compositing accumulates for each ray: [R, 3] weighted colour, [R] weight sum
    (the accumulation), [R] weighted interval midpoint, [R] samples the field evaluated."""

    weighted_rgb: Tensor
    accumulation: Tensor
    weighted_depth: Tensor
    evaluated: Tensor


# The field's colour and density at a subset of packed samples (their indices, rays in order).
FieldAt = Callable[[Tensor], tuple[Tensor, Tensor]]


@torch.no_grad()
def composite_front_to_back(samples: PackedSamples, num_rays: int, field_at: FieldAt, samples_per_round: int,
                            min_transmittance: float) -> Composited:
    """Volume rendering of packed samples in rounds, for rendering without gradients: round k
    evaluates the field at the k-th `samples_per_round` samples of every ray still visible -- whose
    transmittance has not fallen below `min_transmittance` (0: every ray to its end) -- so that a ray
    stops at the first opaque surface it meets (early termination, as instant-ngp and nerfacc render),
    and one field call holds at most rays x `samples_per_round` samples whatever the image size.
    Each omitted sample would have weighed less than `min_transmittance`."""
    ray_indices = samples.ray_indices
    counts = torch.bincount(ray_indices, minlength=num_rays)
    first_of_ray = torch.cumsum(counts, 0) - counts
    dtype = samples.t_starts.dtype
    result = Composited(samples.t_starts.new_zeros(num_rays, 3), samples.t_starts.new_zeros(num_rays),
                        samples.t_starts.new_zeros(num_rays), torch.zeros_like(counts))
    optical_depth = samples.t_starts.new_zeros(num_rays, dtype=torch.float64)
    rays = torch.arange(num_rays, device=ray_indices.device)
    taken = 0  # samples of each ray evaluated so far
    while True:
        # The next round's samples of each visible ray with samples left: the packed positions from
        # first_of_ray + taken on, at most samples_per_round of them, rays in order.
        rays = rays[counts[rays] > taken]
        if min_transmittance > 0:
            rays = rays[torch.exp(-optical_depth[rays]) >= min_transmittance]
        if len(rays) == 0:
            break
        per_ray = (counts[rays] - taken).clamp(max=samples_per_round)
        round_starts = torch.cumsum(per_ray, 0) - per_ray
        sample_rays = torch.repeat_interleave(rays, per_ray)
        position = torch.arange(len(sample_rays), device=rays.device) - torch.repeat_interleave(round_starts, per_ray)
        chosen = first_of_ray[sample_rays] + taken + position
        taken += samples_per_round
        t_starts, t_ends = samples.t_starts[chosen], samples.t_ends[chosen]
        densities, rgb = field_at(chosen)
        # Weights as if each ray started here, times what earlier rounds let through.
        weights = packed_weights(t_starts, t_ends, densities, sample_rays, num_rays)
        weights = weights * torch.exp(-optical_depth[sample_rays]).to(dtype)
        result.weighted_rgb.index_add_(0, sample_rays, weights[:, None] * rgb)
        result.accumulation.index_add_(0, sample_rays, weights)
        result.weighted_depth.index_add_(0, sample_rays, weights * (t_starts + t_ends) / 2)
        result.evaluated.index_add_(0, rays, per_ray)
        optical_depth.index_add_(0, sample_rays, (densities * (t_ends - t_starts)).double())
    return result
