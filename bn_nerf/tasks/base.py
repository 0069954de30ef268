"""What every sidecar task is: a signal, a forward operator, a loss and metrics.

A task owns its data and says how a network's output becomes a measurement; it never builds
layers. The one training loop (`bn_nerf.tasks.trainer`) runs every task.
"""

from __future__ import annotations

import abc
from pathlib import Path

import torch
from torch import nn


class Task(abc.ABC):
    """A coordinate-network task. Subclasses set `name`, `in_dim` and `out_dim`."""

    name: str
    in_dim: int
    out_dim: int
    # The metric a progress bar and a train-mode figure report; `metrics()` must return it.
    primary_metric: str = "psnr"
    # True when a training step's loss is the whole training objective (all the data, no sampled
    # batch): the trainer may then keep the iterate with the lowest loss instead of the last.
    full_batch: bool = True

    @abc.abstractmethod
    def training_loss(self, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        """The loss of one training step (network in train mode). `generator` draws any random
        batch, so that a resumed run draws the same batches as an uninterrupted one."""

    @abc.abstractmethod
    def reconstruct(self, net: nn.Module) -> torch.Tensor:
        """The whole signal as the network represents it now, in whatever mode it is in.
        Called under torch.no_grad()."""

    @abc.abstractmethod
    def metrics(self, reconstruction: torch.Tensor) -> dict[str, float]:
        """Quality of a reconstruction against the ground truth."""

    def progress(self, loss: float) -> dict[str, float]:
        """Figures for the progress bar, from a training loss (e.g. PSNR from an MSE)."""
        return {}

    def calibrate(self, net: nn.Module) -> None:
        """Feed the data BatchNorm's running statistics should describe through `net`.

        By default that is the whole reconstruction: the coordinates the network is trained on.
        """
        self.reconstruct(net)

    def extra_metrics(self, net: nn.Module) -> dict:
        """Figures that need the final, eval-mode network itself (bits per pixel, a classical
        reference row, ...). None by default."""
        return {}

    def write_outputs(self, reconstruction: torch.Tensor, out_dir: Path) -> None:
        """Files a user looks at (images, error maps, meshes). Nothing by default."""

    def to(self, device: torch.device) -> "Task":
        """Move the task's tensors to `device`; returns self."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self
