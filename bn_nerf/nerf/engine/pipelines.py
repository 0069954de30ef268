"""The plugin's pipelines: nerfstudio's, trained as one method at any number of processes, and a
dynamic-batch pipeline bounded for grid-rendered BN models.

`GlobalBatchPipeline` is nerfstudio's VanillaPipeline, unchanged on one process. On several
(bn_nerf.nerf.distributed.processes says how the step is made the one-process step): the configured
ray count is the global batch, each process training its share; the model is wrapped in
DistributedDataParallel on any device (nerfstudio's pipeline passes CUDA device ids, which DDP
refuses for a CPU model) and without DDP's broadcast of every buffer before each forward --
BatchNorm's running statistics are the group's already, the occupancy grid is synced at its
refreshes, and its buffers (cell coordinates and occupancy, ~80 MB at 128^3) would otherwise be the
largest message of every step.

`SampleBudgetPipeline`: the ray count of a step follows a sample budget, as nerfacc and nerfstudio's
instant-ngp keep theirs, within limits a grid-rendered BN model needs. With a fixed ray count, the
first steps of an occupancy-grid model march every cell of the box: at bn-nerf's GPU settings (4,096
rays, step 0.005) that is about 3 million samples through two 8x256 MLPs, tens of GB of activations,
where the same model needs a few hundred thousand once the grid knows the scene. nerfstudio's
pipeline rescales the ray count every step to keep the samples near a target; this one also keeps
the count between a floor (BatchNorm's statistics need samples) and a ceiling, and leaves it
unchanged after a batch without samples (nerfstudio's would divide by zero). On several processes the
budget is the global batch's: the count is rescaled by every process's samples together, so it is
the same on every process and the same as one process's.

Only models that pack a varying number of samples per ray (`packs_samples`, the grid-rendered ones,
which report `num_samples_per_batch`) follow the budget; any other model -- bn-nerf's hierarchical
sampler, a fixed number of samples per ray -- trains at the datamanager's ray count, as in
nerfstudio's plain pipeline.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal, Optional, Type

import torch
import torch.distributed as dist
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.pipelines.dynamic_batch import DynamicBatchPipeline, DynamicBatchPipelineConfig

from bn_nerf.nerf.distributed.processes import (keep_random_states_agreeing, next_train_share, share_bounds,
                                                sum_over_processes)


# DDP without its broadcast of every buffer before each forward. torch 2.14 renamed the switch and
# warns (FutureWarning) on the old name; the new one still syncs buffers once, at construction, which
# changes nothing here: every process builds its model from the same random state.
NO_BUFFER_BROADCAST_EACH_FORWARD = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


@dataclass
class GlobalBatchPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: GlobalBatchPipeline)


class GlobalBatchPipeline(VanillaPipeline):
    """nerfstudio's VanillaPipeline; on several processes, one method whatever their number."""

    config: GlobalBatchPipelineConfig

    def __init__(self, config: VanillaPipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler: Optional[GradScaler] = None):
        if world_size > 1:
            if torch.device(device).type == "cuda":
                torch.cuda.set_device(device)  # where the group's CUDA messages go
            # Before the datamanager and the model draw anything: both then start the same everywhere.
            keep_random_states_agreeing(device)
        # The datamanager reads world_size only to size its loader's workers; the model is wrapped below.
        super().__init__(config, device, test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler)
        self.world_size = world_size
        if world_size > 1:
            cuda = torch.device(device).type == "cuda"
            self._model = DistributedDataParallel(self._model, device_ids=[local_rank] if cuda else None,
                                                  find_unused_parameters=True, **NO_BUFFER_BROADCAST_EACH_FORWARD)
            self.set_train_rays(self.datamanager.config.train_num_rays_per_batch)

    @property
    def global_train_rays(self) -> int:
        """The rays of one training step over every process."""
        return self.datamanager.config.train_num_rays_per_batch

    def set_train_rays(self, global_rays: int) -> None:
        """Keep this process's share in the sampler between steps: nerfstudio reports the rate of a
        step as processes x the sampler's count."""
        sampler = self.datamanager.train_pixel_sampler
        if sampler is not None:
            start, end = share_bounds(global_rays, dist.get_rank(), self.world_size)
            sampler.set_num_rays_per_batch(end - start)

    def get_train_loss_dict(self, step: int):
        if self.world_size == 1:
            return super().get_train_loss_dict(step)
        ray_bundle, batch, loss_weight = next_train_share(self.datamanager, step, self.global_train_rays)
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        if loss_weight != 1.0:
            # DDP averages the processes' gradients: weighted so, their average is the mean over all rays.
            loss_dict = {name: loss * loss_weight for name, loss in loss_dict.items()}
        return model_outputs, loss_dict, metrics_dict


@dataclass
class SampleBudgetPipelineConfig(DynamicBatchPipelineConfig):
    _target: Type = field(default_factory=lambda: SampleBudgetPipeline)
    min_num_rays_per_batch: int = 256
    """Fewest rays a step (also the first step's count when the sample budget allows fewer)."""
    max_num_rays_per_batch: int = 16384
    """Most rays a step, however few samples each gets."""


class SampleBudgetPipeline(DynamicBatchPipeline, GlobalBatchPipeline):
    config: SampleBudgetPipelineConfig

    @property
    def follows_budget(self) -> bool:
        return getattr(self.model, "packs_samples", False)

    @property
    def global_train_rays(self) -> int:
        return self.dynamic_num_rays_per_batch if self.follows_budget else super().global_train_rays

    def get_train_loss_dict(self, step: int):
        if self.follows_budget:
            return super().get_train_loss_dict(step)
        return GlobalBatchPipeline.get_train_loss_dict(self, step)

    def _update_dynamic_num_rays_per_batch(self, num_samples_per_batch: int) -> None:
        num_samples_per_batch = sum_over_processes(num_samples_per_batch, self.device)
        if num_samples_per_batch > 0:  # a batch without samples says nothing of the next one's
            super()._update_dynamic_num_rays_per_batch(num_samples_per_batch)

    def _update_pixel_samplers(self) -> None:
        # Called after every update and by the constructor: the bounds hold from the first step on.
        if not self.follows_budget:
            return  # the datamanager's own ray counts stand
        self.dynamic_num_rays_per_batch = min(max(self.dynamic_num_rays_per_batch, self.config.min_num_rays_per_batch),
                                              self.config.max_num_rays_per_batch)
        super()._update_pixel_samplers()
        if self.world_size > 1:
            self.set_train_rays(self.dynamic_num_rays_per_batch)
