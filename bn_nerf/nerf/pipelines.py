"""nerfstudio's dynamic-batch pipeline, bounded: the ray count of a step follows a sample budget, as
nerfacc and nerfstudio's instant-ngp keep theirs, within limits a grid-rendered BN model needs.

With a fixed ray count, the first steps of an occupancy-grid model march every cell of the box: at
bn-nerf's GPU settings (4,096 rays, step 0.005) that is about 3 million samples through two 8x256
MLPs, tens of GB of activations, where the same model needs a few hundred thousand once the grid
knows the scene. nerfstudio's pipeline rescales the ray count every step to keep the samples near a
target; this one also keeps the count between a floor (BatchNorm's statistics need samples) and a
ceiling, and leaves it unchanged after a batch without samples (nerfstudio's would divide by zero).

Only models that pack a varying number of samples per ray (`packs_samples`, the grid-rendered ones,
which report `num_samples_per_batch`) follow the budget; any other model -- bn-nerf's hierarchical
sampler, a fixed number of samples per ray -- trains at the datamanager's ray count, as in
nerfstudio's plain pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.pipelines.base_pipeline import VanillaPipeline
from nerfstudio.pipelines.dynamic_batch import DynamicBatchPipeline, DynamicBatchPipelineConfig


@dataclass
class SampleBudgetPipelineConfig(DynamicBatchPipelineConfig):
    _target: Type = field(default_factory=lambda: SampleBudgetPipeline)
    min_num_rays_per_batch: int = 256
    """Fewest rays a step (also the first step's count when the sample budget allows fewer)."""
    max_num_rays_per_batch: int = 16384
    """Most rays a step, however few samples each gets."""


class SampleBudgetPipeline(DynamicBatchPipeline):
    config: SampleBudgetPipelineConfig

    @property
    def follows_budget(self) -> bool:
        return getattr(self.model, "packs_samples", False)

    def get_train_loss_dict(self, step: int):
        if self.follows_budget:
            return super().get_train_loss_dict(step)
        return VanillaPipeline.get_train_loss_dict(self, step)

    def _update_dynamic_num_rays_per_batch(self, num_samples_per_batch: int) -> None:
        if num_samples_per_batch > 0:  # a batch without samples says nothing of the next one's
            super()._update_dynamic_num_rays_per_batch(num_samples_per_batch)

    def _update_pixel_samplers(self) -> None:
        # Called after every update and by the constructor: the bounds hold from the first step on.
        if not self.follows_budget:
            return  # the datamanager's own ray counts stand
        self.dynamic_num_rays_per_batch = min(max(self.dynamic_num_rays_per_batch, self.config.min_num_rays_per_batch),
                                              self.config.max_num_rays_per_batch)
        super()._update_pixel_samplers()
