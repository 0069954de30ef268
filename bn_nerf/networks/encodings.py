"""Input encodings that lift low-dimensional coordinates before the first layer."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """NeRF-style octaves: [x, sin(2^k pi x), cos(2^k pi x)] for k = 0 .. octaves-1.

    The paper's "PE" baseline uses 10 octaves with the identity concatenated.
    """

    def __init__(self, in_dim: int, octaves: int = 10, include_input: bool = True):
        super().__init__()
        if octaves < 1:
            raise ValueError(f"positional encoding needs at least one octave, got {octaves}")
        self.in_dim = in_dim
        self.octaves = octaves
        self.include_input = include_input
        # A buffer, not a parameter: the frequencies are fixed and must follow .to(device).
        self.register_buffer("frequencies", (2.0 ** torch.arange(octaves)) * math.pi, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (2 * self.octaves + int(self.include_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x[..., None] * self.frequencies).flatten(-2)
        parts = [torch.sin(scaled), torch.cos(scaled)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features [sin(2 pi B x), cos(2 pi B x)] with B ~ N(0, scale^2) (Tancik et al.)."""

    def __init__(self, in_dim: int, num_features: int = 256, scale: float = 10.0, seed: int = 0):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"Fourier features need num_features >= 1, got {num_features}")
        # A private generator so the projection depends on `seed` alone, not on the global RNG state.
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(in_dim, num_features, generator=generator) * scale)

    @property
    def out_dim(self) -> int:
        return 2 * self.projection.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x @ self.projection
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class IdentityEncoding(nn.Module):
    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ScaledCoordinates(nn.Module):
    """`encoding` applied to the coordinates times `scale` (NetworkConfig.coordinate_scale)."""

    def __init__(self, encoding: nn.Module, scale: float):
        super().__init__()
        self.encoding = encoding
        self.scale = scale
        self.out_dim = encoding.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x * self.scale)
