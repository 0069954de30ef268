"""nerfstudio's Trainer, re-estimating BatchNorm statistics before each checkpoint is written,
choosing its CPU threads and memory reuse as bn-inr's runs do, opening the viewer at the first
training view, and leaving no run folder behind a run that fails before its first step.

ns-train (and bn-nerf-demo) write the run folder's config.yml before anything reads the data, and a
folder with a config.yml looks like a started run to ns-eval, ns-viewer and a user listing their
outputs. So the configuration checks the scene before it saves itself, and the trainer removes the
folder it was given when setting up or the first step fails for any other reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional, Type

import numpy as np
import torch
import viser
import viser.transforms as vtf

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import comms
from nerfstudio.utils.misc import step_check
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO, Viewer

from bn_nerf.io.errors import exiting_on_input_error
from bn_nerf.nerf.data.dataparser import CHECKED_PARSERS, exit_on_bad_scene
from bn_nerf.nerf.distributed.processes import next_train_share, threads_per_process
from bn_nerf.nerf.models.batchnorm_model import BatchNormModelMixin
from bn_nerf.runtime import choose_threads, keep_freed_memory, return_freed_memory


@dataclass
class BatchNormTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: BatchNormTrainer)
    return_memory_every: int = 10
    """Training steps between returns of freed memory to the system. Kept freed memory (see `setup`)
    fragments: a step's tensors change size with its ray and sample counts, so a block freed by one
    step rarely fits the next one's, and the heap kept growing (fox at 270x480, bn-diner-cpu: a
    4.52 GB peak by step 300); returned every 10 steps, the peak was 3.37 GB at the same speed
    (BENCHMARKS.md "Memory and rendering at a phone's resolution")."""
    threads: Optional[int] = None
    """CPU threads for torch on a CPU run (default: every usable core, unless a short probe measures one
    thread clearly faster; OMP_NUM_THREADS caps it). Runs to be compared should all set the same count."""

    def save_config(self) -> None:
        """Check the scene the run will read, then write config.yml (creating the run folder): bad
        input ends in one line, before nerfstudio prints where checkpoints go, and leaves no folder."""
        datamanager = self.pipeline.datamanager
        if isinstance(datamanager.dataparser, CHECKED_PARSERS):
            # The datamanager hands its `data` (ns-train's --data) to the parser when it is set.
            exit_on_bad_scene(datamanager.dataparser, Path(datamanager.data or datamanager.dataparser.data))
        super().save_config()


class BatchNormTrainer(Trainer):
    """Checkpoints carry BN statistics exact for the final weights, so ns-eval, ns-render and the
    viewer (eval mode, running statistics) render as well as training did."""

    config: BatchNormTrainerConfig

    def __init__(self, config: TrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        # The run folder is this run's to remove only while it holds nothing but the config.yml just
        # saved: a --timestamp naming an earlier run's folder is never removed. Of several processes,
        # the first alone writes into it (nerfstudio's rule) and removes it.
        self.run_folder_is_new = (comms.is_main_process() and self.base_dir.is_dir()
                                  and os.listdir(self.base_dir) == ["config.yml"])
        self.completed_a_step = False

    @contextlib.contextmanager
    def removing_run_folder_on_early_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:  # an exit from the data check and Ctrl-C alike: the run never started
            if self.run_folder_is_new and not self.completed_a_step:
                self.remove_run_folder()
            raise

    def remove_run_folder(self) -> None:
        """Remove the run folder, and the experiment and method folders above it that it leaves empty
        (the output folder itself stays)."""
        shutil.rmtree(self.base_dir, ignore_errors=True)
        for folder in self.base_dir.relative_to(self.config.output_dir).parents[:-1]:
            try:
                (Path(self.config.output_dir) / folder).rmdir()
            except OSError:  # not empty: another run's
                break

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        if self.device == "cpu":
            # On a shared CPU two OpenMP threads can take several times as long as one (BENCHMARKS.md):
            # measure, as bn-inr's runs do. Several processes on one machine split its cores.
            threads = self.config.threads or threads_per_process()
            CONSOLE.print(f"{self.config.method_name}: {choose_threads(threads, torch.device('cpu')).line}")
        # A step allocates and frees activations of hundreds of MB; glibc would return them to the
        # kernel and page-fault them back every step. What piles up is returned every
        # `return_memory_every` steps and after each eval image and checkpoint.
        keep_freed_memory()
        # A combination of options the model refuses as it is built is a usage error, reported as the
        # scene check reports bad input, not as a traceback through nerfstudio's set-up.
        with self.removing_run_folder_on_early_failure(), exiting_on_input_error():
            super().setup(test_mode)
        if isinstance(self.viewer_state, Viewer):
            self.viewer_state.viser_server.on_client_connect(self.look_through_first_training_camera)

    def train(self) -> None:
        with self.removing_run_folder_on_early_failure():
            super().train()

    def train_iteration(self, step: int):
        result = super().train_iteration(step)
        self.completed_a_step = True
        if step % self.config.return_memory_every == 0:
            return_freed_memory()
        return result

    def calibrate_batchnorm(self, step: int) -> None:
        """Replace the running statistics by the exact ones of one batch of `batchnorm_calibration_rays`
        training rays (one batch, so that the re-estimation takes one pass through each field). On
        several processes every one takes its share of the batch and ends with the union's statistics."""
        model = self.pipeline.model
        if not (isinstance(model, BatchNormModelMixin) and model.has_batchnorm):
            return
        rays, _, _ = next_train_share(self.pipeline.datamanager, step, model.config.batchnorm_calibration_rays)
        # The viewer renders from another thread and toggles train/eval under this lock.
        with self.train_lock:
            model.reestimate_batchnorm_statistics(rays)

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
        return_freed_memory()

    def eval_iteration(self, step: int) -> None:
        super().eval_iteration(step)
        c = self.config
        if any(step_check(step, every) for every in (c.steps_per_eval_batch, c.steps_per_eval_image,
                                                      c.steps_per_eval_all_images)):
            # What rendering an eval image freed goes back to the system: kept (keep_freed_memory), it
            # would stay the process's resident size until training ends.
            return_freed_memory()
