"""nerfstudio's Trainer, re-estimating BatchNorm statistics before each checkpoint is written, and
opening the viewer at the first training view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

import numpy as np
import viser
import viser.transforms as vtf

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO, Viewer

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

    def setup(self, test_mode: str = "val") -> None:
        super().setup(test_mode)
        if isinstance(self.viewer_state, Viewer):
            self.viewer_state.viser_server.on_client_connect(self.look_through_first_training_camera)

    def look_through_first_training_camera(self, client: viser.ClientHandle) -> None:
        """A browser that connects sees the scene as the first training image does, at its field of
        view, rather than from viser's default pose -- which for a Blender scene (world units of
        nerfstudio's scene box) sits inside the object. The pose conversion is the viewer's own, as
        when a training camera's frustum is clicked."""
        camera = self.pipeline.datamanager.train_dataset.cameras[0]
        camera_to_world = camera.camera_to_worlds.cpu().numpy()
        rotation = vtf.SO3.from_matrix(camera_to_world[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
        with client.atomic():
            client.camera.position = camera_to_world[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO
            client.camera.wxyz = rotation.wxyz
            client.camera.fov = float(2 * np.arctan(float(camera.cy) / float(camera.fy)))

    def save_checkpoint(self, step: int) -> None:
        self.calibrate_batchnorm(step)
        super().save_checkpoint(step)
