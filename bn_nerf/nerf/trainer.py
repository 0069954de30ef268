"""nerfstudio's Trainer, re-estimating BatchNorm statistics before each checkpoint is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from bn_nerf.nerf.models import BNNeRFModel


@dataclass
class BatchNormTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: BatchNormTrainer)


class BatchNormTrainer(Trainer):
    """Checkpoints carry BN statistics exact for the final weights, so ns-eval, ns-render and the
    viewer (eval mode, running statistics) render as well as training did."""

    config: BatchNormTrainerConfig

    def save_checkpoint(self, step: int) -> None:
        model = self.pipeline.model
        if isinstance(model, BNNeRFModel) and model.has_batchnorm:
            datamanager = self.pipeline.datamanager
            rays_per_batch = datamanager.config.train_num_rays_per_batch
            batches = -(-model.config.batchnorm_calibration_rays // rays_per_batch)
            ray_bundles = [datamanager.next_train(step)[0] for _ in range(batches)]
            # The viewer renders from another thread and toggles train/eval under this lock.
            with self.train_lock:
                model.reestimate_batchnorm_statistics(ray_bundles)
        super().save_checkpoint(step)
