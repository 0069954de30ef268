"""Multiplicative filter networks (Fathony et al., 2021): no activations, the hidden features are
multiplied by sinusoidal (Fourier) or Gabor filters of the input at every layer."""

from __future__ import annotations

import math

import torch
from torch import nn

from bn_nerf.networks.config import NetworkConfig


class FilterBank(nn.Module):
    """One layer's filters g(x): sin(W x + b), times a Gaussian window for the Gabor kind."""

    def __init__(self, config: NetworkConfig, in_dim: int, width: int, filter_count: int):
        super().__init__()
        self.gabor = config.mfn_filter == "gabor"
        self.linear = nn.Linear(in_dim, width)
        with torch.no_grad():
            # Each product of filters adds frequencies, so every filter gets scale / sqrt(#filters).
            self.linear.weight.mul_(config.mfn_input_scale / math.sqrt(filter_count))
            nn.init.uniform_(self.linear.bias, -math.pi, math.pi)
        if self.gabor:
            gamma = torch.distributions.Gamma(config.mfn_gabor_alpha / filter_count, config.mfn_gabor_beta).sample((width,))
            self.mu = nn.Parameter(torch.rand(width, in_dim) * 2 - 1)
            self.gamma = nn.Parameter(gamma)
            with torch.no_grad():
                self.linear.weight.mul_(torch.sqrt(gamma)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wave = torch.sin(self.linear(x))
        if not self.gabor:
            return wave
        squared_distance = (x.square().sum(-1, keepdim=True) - 2 * x @ self.mu.T + self.mu.square().sum(-1))
        return wave * torch.exp(-0.5 * squared_distance * self.gamma)


class MultiplicativeFilterNetwork(nn.Module):
    """`depth` filter layers of `width` features: z1 = g1(x), z(k+1) = (W_k z_k + b_k) * g(k+1)(x),
    then a Linear output layer (or the last z when `out_dim` is None)."""

    def __init__(self, config: NetworkConfig, in_dim: int, out_dim: int | None, depth: int, width: int):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"a coordinate network needs depth >= 1 and width >= 1, got {depth} x {width}")
        self.config = config
        self.in_dim = in_dim
        self.width = width
        self.depth = depth
        self.filters = nn.ModuleList(FilterBank(config, in_dim, width, depth) for _ in range(depth))
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        bound = math.sqrt(config.mfn_weight_scale / width)
        with torch.no_grad():
            for linear in self.linears:
                nn.init.uniform_(linear.weight, -bound, bound)
        self.out_dim = width if out_dim is None else out_dim
        self.head = nn.Linear(width, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]) * self.config.coordinate_scale
        z = self.filters[0](x)
        for linear, filter_bank in zip(self.linears, self.filters[1:]):
            z = linear(z) * filter_bank(x)
        out = z if self.head is None else self.head(z)
        return out.reshape(*leading, self.out_dim)
