"""nerfstudio's exponential learning-rate decay, keeping learning rates Python floats.

nerfstudio's ExponentialDecayScheduler computes its factor with numpy, so optimizer and scheduler
state hold numpy scalars, and torch >= 2.6's default `torch.load(weights_only=True)` refuses such
checkpoints (this is why nerfacto checkpoints fail in ns-eval under torch 2.14).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from torch.optim import Optimizer, lr_scheduler

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    config: FloatExponentialDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        # The same schedule as nerfstudio's, its factor converted to float before torch stores it.
        numpy_factor = super().get_scheduler(optimizer, lr_init).lr_lambdas[0]
        for group in optimizer.param_groups:
            group["lr"] = float(group["initial_lr"])
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: float(numpy_factor(step)))
