"""NeRF training on several processes (bn_nerf.nerf.engine.launch starts them): what makes W processes
train the method one process trains (BatchNorm's part is bn_nerf.networks.norms):
  - the random states agree (`keep_random_states_agreeing`, when the pipeline is built, and
    `agree_random_states` before each draw that must): the model starts identical, every process
    draws the same global ray batch and keeps its own slice of it (`next_train_share`), and the
    processes' slices together are the rays one process would have drawn;
  - the configured ray count is the global batch; each process's loss is weighted by its share
    (W x its rays / all rays: 1 when the count divides evenly), so that DistributedDataParallel's
    average of the gradients is the gradient of the mean over all rays;
  - the occupancy grid's refreshes agree: every process draws the same cells and evaluates the
    density at its share of them (`evaluated_in_shares`, called by
    bn_nerf.nerf.model_components.sampling; under a pipeline that does not align the random states,
    each refreshes alone and takes the first's grid);
  - BatchNorm's running statistics are the group's, and the re-estimation before a checkpoint
    calibrates on the union of the processes' rays (`next_train_share` of the calibration batch);
  - the first process alone writes checkpoints and logs (nerfstudio's rule), so a resume, on any
    number of processes, reads one checkpoint.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Dict, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from nerfstudio.utils import comms

from bn_nerf.runtime import usable_cores

if TYPE_CHECKING:
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# The device whose random state the processes keep agreeing (set by `keep_random_states_agreeing`).
_agreeing_device: torch.device | None = None


def keep_random_states_agreeing(device: torch.device | str) -> None:
    """Give every process the first process's random states (Python, NumPy, torch on the CPU and on
    `device`) -- the model then starts the same everywhere -- and from here on copy the first
    process's torch states again wherever the processes' draws must agree (`agree_random_states`)."""
    global _agreeing_device
    if world_size() == 1:
        return
    device = torch.device(device)
    states = [(random.getstate(), np.random.get_state(), torch.get_rng_state(),
               torch.cuda.get_rng_state(device) if device.type == "cuda" else None)]
    dist.broadcast_object_list(states, src=0)
    python_state, numpy_state, torch_state, device_state = states[0]
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if device_state is not None:
        torch.cuda.set_rng_state(device_state, device)
    _agreeing_device = device


def random_states_agree() -> bool:
    """Whether the processes keep their random states agreeing (a GlobalBatchPipeline asked so)."""
    return _agreeing_device is not None and world_size() > 1


def agree_random_states() -> None:
    """Copy the first process's torch random states (CPU, device) to every process, before draws that
    must be the same everywhere -- a global ray batch, a grid refresh's cells. In between, a process's
    own draws (the jitter and background of its share of rays) can differ in number from another's,
    when their shares do. A 5 KB message (and 16 bytes for CUDA's generator)."""
    if not random_states_agree():
        return
    device = _agreeing_device
    # NCCL sends CUDA tensors only.
    transport = device if dist.get_backend() == dist.Backend.NCCL else torch.device("cpu")
    state = torch.get_rng_state().to(transport)
    dist.broadcast(state, src=0)
    torch.set_rng_state(state.cpu())
    if device.type == "cuda":
        device_state = torch.cuda.get_rng_state(device).to(transport)
        dist.broadcast(device_state, src=0)
        torch.cuda.set_rng_state(device_state.cpu(), device)


def share_bounds(total: int, rank: int, processes: int) -> Tuple[int, int]:
    """[start, end) of the `rank`-th of `processes` consecutive shares of `total` items (the first
    total % processes shares hold one more)."""
    size, remainder = divmod(total, processes)
    start = rank * size + min(rank, remainder)
    return start, start + size + (rank < remainder)


def next_train_share(datamanager: VanillaDataManager, step: int, global_rays: int) -> Tuple[RayBundle, Dict, float]:
    """This process's share of one global batch of `global_rays` training rays, its batch, and the
    weight of its loss (W x its rays / global_rays). With one process: the whole batch, weight 1.

    Every process draws the whole batch -- the same one, their random states agreeing -- and keeps a
    consecutive slice, so the shares are disjoint and together the batch one process would train on.
    Drawing costs a few index operations per ray; the network sees only the share."""
    agree_random_states()
    sampler = datamanager.train_pixel_sampler
    assert sampler is not None
    kept = sampler.num_rays_per_batch
    sampler.set_num_rays_per_batch(global_rays)
    try:
        ray_bundle, batch = datamanager.next_train(step)
    finally:
        sampler.set_num_rays_per_batch(kept)
    processes = world_size()
    if processes == 1:
        return ray_bundle, batch, 1.0
    start, end = share_bounds(global_rays, dist.get_rank(), processes)
    share = {key: value[start:end] if isinstance(value, torch.Tensor) and len(value) == global_rays else value
             for key, value in batch.items()}
    return ray_bundle[start:end], share, processes * (end - start) / global_rays


def evaluated_in_shares(function: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """`function` of every row, each process evaluating a consecutive share of the rows (every one
    being given the same rows) and the shares summed -- exactly, the others' entries being zeros --
    into the whole on every process."""

    def shared(rows: Tensor) -> Tensor:
        start, end = share_bounds(len(rows), dist.get_rank(), dist.get_world_size())
        share = function(rows[start:end])
        whole = share.new_zeros((len(rows), *share.shape[1:]))
        whole[start:end] = share
        dist.all_reduce(whole)
        return whole

    return shared


def copy_from_first_process(*tensors: Tensor) -> None:
    """Overwrite the tensors with the first process's."""
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


def sum_over_processes(value: int, device: torch.device | str) -> int:
    """`value` summed over every process (itself with one)."""
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def threads_per_process() -> int | None:
    """CPU threads for each of several processes sharing a machine: its usable cores, split evenly.
    None with one process (the run then chooses as bn-inr's runs do)."""
    if world_size() == 1:
        return None
    return max(1, usable_cores() // comms.get_local_size())
