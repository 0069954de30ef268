"""What every model of the plugin (bn-nerf with either sampler, bn-diner) adds to a nerfstudio Model
for BatchNorm, and the options its configuration carries for it.

BatchNorm semantics:
  - training: every field call sees all samples of all rays of the batch, so BN normalizes with the
    statistics of the whole ray batch -- on several processes, of every process's share of it
    (`use_sync_batchnorm_when_distributed`, bn_nerf.networks.norms);
  - eval (ns-eval, ns-render, the viewer): running statistics;
  - checkpoints: before one is written the running statistics are replaced by the exact statistics
    of one large batch of training rays under the final weights (`reestimate_batchnorm_statistics`,
    called by bn_nerf.nerf.engine.trainer), because exponential running averages lag weights that move fast.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Dict

import torch

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.model_components.scene_colliders import NearFarCollider

from bn_nerf.nerf.fields.radiance_field import Normalization, NormPlacement
from bn_nerf.networks import convert_to_sync_batchnorm
from bn_nerf.networks.norms import batchnorm_layers, synchronize_batchnorm


@dataclass
class BatchNormOptions:
    """The normalization switch every plugin model's configuration carries."""

    normalization: Normalization = "batch"
    """"batch": BatchNorm after each hidden activation; "none": the plain baseline (the switch alone)."""
    norm_placement: NormPlacement = "after"
    """BN after the ReLU (the paper's text) or before it (Linear -> BN -> ReLU, the authors' code)."""
    batchnorm_calibration_rays: int = 4096
    """Training rays, in one batch, whose exact statistics replace BN's running averages before each
    checkpoint."""


def training_interval_collider(collider_params: Dict[str, float]) -> NearFarCollider:
    """The near/far collider, keeping training's interval at eval time too.

    nerfstudio's collider moves the near plane to 0 outside training (reset_near_plane). With a fixed
    number of samples that spreads eval samples over [0, far] instead of [near, far]: coarser sampling,
    samples where training never looked, and -- for BN -- a sample distribution whose statistics are
    not the ones training normalized with, which is what the checkpoint-time re-estimation would then
    record. Keep the training interval, as the original NeRF does for its test renders.
    """
    return NearFarCollider(
        near_plane=collider_params["near_plane"], far_plane=collider_params["far_plane"], reset_near_plane=False
    )


class BatchNormModelMixin(abc.ABC):
    """What every plugin model adds to a nerfstudio Model for BatchNorm: statistics synced across
    processes and running statistics re-estimated from training rays (called by
    bn_nerf.nerf.engine.trainer)."""

    @property
    def has_batchnorm(self) -> bool:
        return bool(batchnorm_layers(self))

    def use_sync_batchnorm(self) -> None:
        """torch's SyncBatchNorm for every BN layer, whatever the process group (it runs on CUDA)."""
        convert_to_sync_batchnorm(self)  # converts the BN layers below the model in place

    def use_sync_batchnorm_when_distributed(self) -> None:
        """In a group of several processes BN statistics must span the whole batch, not each process's
        share: the fields' BN layers are built synced there (bn_nerf.networks.norms picks torch's
        SyncBatchNorm on NCCL, an all-reduce elsewhere); this converts any built before the group."""
        synchronize_batchnorm(self)

    @torch.no_grad()
    def reestimate_batchnorm_statistics(self, rays: RayBundle) -> int:
        """Set every BN layer's running statistics to the exact statistics, under the current weights,
        of the samples these rays produce as at deployment (eval mode: deterministic sample placement,
        the training near/far interval). Returns the number of BN layers re-estimated."""
        was_training = self.training
        self.eval()
        try:
            if self.collider is not None:  # near/far bounds, as Model.forward sets them
                rays = self.collider(rays)
            return self.calibrate_batchnorm(rays)
        finally:
            self.train(was_training)

    @abc.abstractmethod
    def calibrate_batchnorm(self, rays: RayBundle) -> int:
        """The model's own re-estimation pass over collided rays, in eval mode: the rays' samples reach
        each field in one call, so that `reestimate_batchnorm` needs a single pass."""
