"""Training a registered method under a step or wall-time budget, in this process, and judging it as
`ns-eval` would: for benchmarks (scripts/benchmark_nerf.py) and the GPU check (scripts/gpu_check.py).

The steps are nerfstudio's own: `Trainer.train_iteration` with the training callbacks around it (the
occupancy-grid updates of bn-diner among them), as `Trainer.train` runs them. Test metrics come from
`pipeline.get_average_eval_image_metrics()` on the test split in eval mode, after the BatchNorm
re-estimation every checkpoint gets -- the figure `ns-eval` reports for a checkpoint saved there.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from bn_nerf.nerf.engine.trainer import BatchNormTrainer, BatchNormTrainerConfig


def method_config(method: str) -> TrainerConfig:
    """A copy of the registered configuration of `method` (ours and nerfstudio's built-in ones)."""
    from nerfstudio.configs.method_configs import all_methods

    if method not in all_methods:
        raise ValueError(f"unknown method '{method}'")
    return copy.deepcopy(all_methods[method])


def setup_trainer(config: TrainerConfig, scene: Path, output: Path, device: str, seed: int = 0,
                  eval_split: str = "test") -> Trainer:
    """The trainer ns-train would build for `config` on `scene`, its eval split being `eval_split`
    ("test", or "val" for choosing hyperparameters)."""
    config = copy.deepcopy(config)
    config.machine.device_type = device
    config.vis = "tensorboard"
    config.output_dir = output
    config.pipeline.datamanager.data = scene
    if isinstance(config, BatchNormTrainerConfig):
        config.threads = torch.get_num_threads()  # the caller's count, not a fresh probe: comparisons fix it
    config.set_timestamp()
    torch.manual_seed(seed)
    random.seed(seed)  # nerfstudio's image loader draws its image order with Python's random
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup(test_mode=eval_split)
    return trainer


@dataclass
class TrainingRecord:
    steps: int = 0
    seconds: float = 0.0
    checks: list = field(default_factory=list)


def train(
    trainer: Trainer,
    steps: Optional[int] = None,
    seconds: Optional[float] = None,
    check_at: tuple[float, ...] = (),
    on_check: Optional[Callable[[Trainer, TrainingRecord], dict]] = None,
    record: Optional[TrainingRecord] = None,
) -> TrainingRecord:
    """Train until `steps` steps or `seconds` seconds of training (whichever is given), calling
    `on_check` when the training time passes each of `check_at` (seconds); its result is kept in
    `record.checks`. Time spent in checks does not count as training time."""
    record = record or TrainingRecord()
    pending = sorted(check_at)
    trainer.pipeline.train()
    while (steps is None or record.steps < steps) and (seconds is None or record.seconds < seconds):
        started = time.perf_counter()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(record.steps, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(record.steps)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(record.steps, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        if trainer.device.startswith("cuda"):
            torch.cuda.synchronize()
        record.seconds += time.perf_counter() - started
        record.steps += 1
        while pending and record.seconds >= pending[0] and on_check is not None:
            pending.pop(0)
            record.checks.append({"seconds": round(record.seconds, 1), "steps": record.steps, **on_check(trainer, record)})
    return record


def test_metrics(trainer: Trainer) -> dict:
    """Mean metrics over the eval split's images (the test split unless set up otherwise), in eval
    mode after the checkpoint-time BatchNorm re-estimation."""
    if isinstance(trainer, BatchNormTrainer):
        trainer.calibrate_batchnorm(0)
    pipeline = trainer.pipeline
    pipeline.eval()
    try:
        metrics = pipeline.get_average_eval_image_metrics()
    finally:
        pipeline.train()
    return {key: float(value) for key, value in metrics.items()}
