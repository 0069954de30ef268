"""nerfstudio's Trainer, re-estimating BatchNorm statistics before each checkpoint is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from bn_nerf.nerf.models import BatchNormModelMixin


@dataclass
class BatchNormTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: BatchNormTrainer)


class BatchNormTrainer(Trainer):
    """Checkpoints carry BN statistics exact for the final weights, so ns-eval, ns-render and the
    viewer (eval mode, running statistics) render as well as training did."""

    config: BatchNormTrainerConfig

    def calibrate_batchnorm(self, step: int) -> None:
        """Replace the running statistics by the exact ones of `batchnorm_calibration_rays` training rays."""
        model = self.pipeline.model
        if not (isinstance(model, BatchNormModelMixin) and model.has_batchnorm):
            return
        datamanager = self.pipeline.datamanager
        batches = -(-model.config.batchnorm_calibration_rays // datamanager.config.train_num_rays_per_batch)
        ray_bundles = [datamanager.next_train(step)[0] for _ in range(batches)]
        # The viewer renders from another thread and toggles train/eval under this lock.
        with self.train_lock:
            model.reestimate_batchnorm_statistics(ray_bundles)

    def save_checkpoint(self, step: int) -> None:
        self.calibrate_batchnorm(step)
        super().save_checkpoint(step)
