"""The fixed coordinates a network is evaluated on again and again: a task's grid, whose encoding is
computed once per network, and the pixel grid the image task and the codec's decoder share."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bn_nerf.networks.mlp import CoordinateMLP


def grid_coordinates(shape: Sequence[int]) -> torch.Tensor:
    """(prod(shape), len(shape)) sample-centre coordinates in [-1, 1], in the array's row-major
    order; column k is the coordinate along array axis k."""
    axes = [torch.linspace(-1.0, 1.0, size) for size in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


def pixel_coordinates(height: int, width: int) -> torch.Tensor:
    """(H*W, 2) pixel-centre coordinates (x, y) in [-1, 1], row-major like the image's pixels.
    Here rather than in the image task so that the codec's decoder reads it without training code."""
    return grid_coordinates((height, width)).flip(-1)


class FixedCoordinates:
    """A task's whole grid of coordinates.

    A CoordinateMLP's encoding has no parameters, so it is computed once per network and reused
    every step: PE's sin/cos are a large share of a small network's step.
    """

    def __init__(self, coordinates: torch.Tensor):
        self.coordinates = coordinates
        self._encoded: torch.Tensor | None = None
        self._encoded_by: nn.Module | None = None

    def to(self, device: torch.device) -> "FixedCoordinates":
        self.coordinates = self.coordinates.to(device)
        self._encoded = self._encoded_by = None
        return self

    def predict(self, net: nn.Module, index: torch.Tensor | None = None) -> torch.Tensor:
        """(count, out_dim) network outputs at all coordinates, or at `index`, in one batch."""
        if not isinstance(net, CoordinateMLP):
            return net(self.coordinates if index is None else self.coordinates[index])
        if self._encoded_by is not net.encoding:
            with torch.no_grad():
                self._encoded = net.encoding(self.coordinates)
            self._encoded_by = net.encoding
        return net.forward_encoded(self._encoded if index is None else self._encoded[index])
