"""The 1D spectral-bias demonstration: fit a sum of sinusoids of known frequencies and follow the
relative error left at each frequency over the iterations.

Eq. 3-4 predict that the residual along an NTK eigenvector decays like exp(-eta lambda n): a
component the kernel gives a small eigenvalue (for ReLU MLPs, the high frequencies) is learned
late. If BN shifts the bulk of the spectrum up relative to lambda_max, its high frequencies should
converge sooner. Gradient descent with eta = 0.5/lambda_max (each net at the same fraction of its own
stability limit) is the setting of the equations; Adam is what the paper trains with.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bn_nerf.analysis.ntk import empirical_ntk, spectrum_statistics


def periodic_grid(points: int) -> torch.Tensor:
    """`points` coordinates on [-1, 1) without the right end, so a sinusoid with an integer number
    of cycles over the interval falls exactly on one DFT bin."""
    return (-1.0 + 2.0 * torch.arange(points, dtype=torch.float32) / points)[:, None]


def multi_frequency_signal(coords: torch.Tensor, frequencies: list[int], seed: int = 0) -> torch.Tensor:
    """Sum of unit-amplitude sinusoids with `frequencies` cycles over [-1, 1) and random phases."""
    phases = torch.rand(len(frequencies), generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    x = coords[:, 0]
    return sum(torch.sin(math.pi * f * (x + 1) + phase) for f, phase in zip(frequencies, phases))[:, None]


def frequency_errors(prediction: torch.Tensor, target: torch.Tensor, frequencies: list[int]) -> np.ndarray:
    """|DFT(prediction - target)| / |DFT(target)| at each frequency: 1 before learning, 0 when learned."""
    residual = torch.fft.rfft((prediction - target)[:, 0].double())
    reference = torch.fft.rfft(target[:, 0].double())
    return np.array([float(residual[f].abs() / reference[f].abs()) for f in frequencies])


@dataclass
class TrainingTrace:
    label: str
    optimizer: str
    learning_rate: float
    iterations: list[int]
    errors: np.ndarray  # records x frequencies
    seconds: float

    def late_errors(self) -> list[float]:
        """Median relative error per frequency over the last tenth of the records: robust to the
        step-to-step oscillation of training at a high learning rate."""
        tail = self.errors[-max(1, len(self.iterations) // 10) :]
        return np.median(tail, axis=0).tolist()

    def iterations_to_reach(self, threshold: float) -> list[int | None]:
        """For each frequency, the first recorded iteration from which its relative error stays
        below `threshold` to the end (a brief dip during oscillating training does not count)."""
        reached = []
        for column in self.errors.T:
            above = np.nonzero(column >= threshold)[0]
            settled = 0 if len(above) == 0 else above[-1] + 1
            reached.append(self.iterations[settled] if settled < len(self.iterations) else None)
        return reached


def train_tracking_frequencies(
    net: nn.Module,
    coords: torch.Tensor,
    target: torch.Tensor,
    frequencies: list[int],
    optimizer: str,
    iterations: int,
    learning_rate: float | None = None,
    record_every: int = 10,
    label: str = "",
) -> TrainingTrace:
    """Full-batch training in train mode (BN on the batch's statistics, as the paper trains and
    reports). optimizer "gd": plain gradient descent on 1/2 ||f - y||^2 with eta = 0.5/lambda_max
    of the initial NTK unless `learning_rate` is given (half the stability limit 2/lambda_max
    leaves room for the kernel to grow during training); "adam": Adam on the mean squared error."""
    net.train()
    if optimizer == "gd":
        if learning_rate is None:
            learning_rate = 0.5 / spectrum_statistics(empirical_ntk(net, coords))[0]["lambda_max"]
        step = torch.optim.SGD(net.parameters(), lr=learning_rate)
    elif optimizer == "adam":
        if learning_rate is None:
            raise ValueError("Adam needs a learning rate")
        step = torch.optim.Adam(net.parameters(), lr=learning_rate)
    else:
        raise ValueError(f"unknown optimizer '{optimizer}'; choose gd or adam")
    recorded_iterations, errors = [], []
    started = time.perf_counter()
    for iteration in range(iterations + 1):
        prediction = net(coords)
        if iteration % record_every == 0 or iteration == iterations:
            recorded_iterations.append(iteration)
            errors.append(frequency_errors(prediction.detach(), target, frequencies))
        if iteration == iterations:
            break
        residual = prediction - target
        loss = 0.5 * residual.square().sum() if optimizer == "gd" else residual.square().mean()
        step.zero_grad(set_to_none=True)
        loss.backward()
        step.step()
    return TrainingTrace(label, optimizer, learning_rate, recorded_iterations, np.array(errors), time.perf_counter() - started)
