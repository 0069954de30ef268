"""The coordinate MLP: encoding x activation family x normalization kind and placement.

This file alone answers where normalization sits in a coordinate network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bn_nerf.networks.config import NetworkConfig
from bn_nerf.networks.encodings import GaussianFourierFeatures, IdentityEncoding, PositionalEncoding, ScaledCoordinates
from bn_nerf.networks.fused import batchnorm_then_linear, fusable, linear as fused_linear, linear_then_batchnorm
from bn_nerf.networks.norms import make_norm


def build_encoding(config: NetworkConfig, in_dim: int) -> nn.Module:
    if config.encoding == "pe":
        encoding = PositionalEncoding(in_dim, config.pe_octaves)
    elif config.encoding == "gauss":
        encoding = GaussianFourierFeatures(in_dim, config.fourier_features, config.fourier_scale, config.encoding_seed)
    else:
        encoding = IdentityEncoding(in_dim)
    # Unscaled nets keep the bare encoding: their module tree and saved state stay as before.
    return encoding if config.coordinate_scale == 1.0 else ScaledCoordinates(encoding, config.coordinate_scale)


class Sine(nn.Module):
    """SIREN's sin(omega0 * x)."""

    def __init__(self, omega0: float):
        super().__init__()
        self.omega0 = omega0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * x)


class ComplexGabor(nn.Module):
    """WIRE's complex Gabor wavelet exp(j omega x - |s x|^2); real inputs are promoted to complex."""

    def __init__(self, omega: float, scale: float):
        super().__init__()
        self.omega = omega
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(1j * self.omega * x - (self.scale * x).abs().square())


def make_activation(config: NetworkConfig) -> nn.Module:
    if config.activation == "sine":
        return Sine(config.sine_omega0)
    if config.activation == "gabor":
        return ComplexGabor(config.wire_omega, config.wire_scale)
    return nn.ReLU()


@torch.no_grad()
def initialize_linear(linear: nn.Linear, config: NetworkConfig, first: bool) -> None:
    """LeCun normal weights for ReLU/PE/normalized nets (the paper), SIREN's uniform scheme for sine nets.

    ReLU-family biases keep nn.Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the
    authors' code: zero biases would make the whole ReLU net positively homogeneous at
    initialization (every kink through the origin), which cripples the ReLU baseline and leaves its
    1D NTK with a handful of non-zero eigenvalues.

    WIRE keeps PyTorch's default initialization, as its reference implementation does, and so does
    every layer when `config.init_scheme` is "torch_default" (nn.Linear already initialized it).
    """
    if config.init_scheme == "torch_default":
        return
    fan_in = linear.in_features
    if config.activation == "relu":
        nn.init.normal_(linear.weight, 0.0, 1.0 / math.sqrt(fan_in))
    elif config.activation == "sine":
        bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / config.sine_omega0
        nn.init.uniform_(linear.weight, -bound, bound)
        nn.init.uniform_(linear.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


class CoordinateMLP(nn.Module):
    """`depth` hidden layers of `width` features and, unless `out_dim` is None, a Linear output layer.

    With `out_dim=None` the network ends at its last hidden layer (activation and normalization
    applied), which is how NeRF fields use it as a trunk under their own heads.
    Inputs may have any leading shape: they are flattened to one batch, so BatchNorm's statistics
    span every coordinate passed in one call (all samples of all rays, for NeRF).
    """

    def __init__(self, config: NetworkConfig, in_dim: int, out_dim: int | None, depth: int, width: int):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"a coordinate network needs depth >= 1 and width >= 1, got {depth} x {width}")
        if out_dim is not None and out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        bad_skips = [i for i in config.skip_connections if not 0 < i < depth]
        if bad_skips:
            raise ValueError(f"skip connections must name hidden layers 1..{depth - 1}, got {bad_skips}")
        self.config = config
        self.in_dim = in_dim
        self.width = width
        self.depth = depth
        self.encoding = build_encoding(config, in_dim)
        self.activation = make_activation(config)
        self.skips = frozenset(config.skip_connections)
        encoded_dim = self.encoding.out_dim
        complex_hidden = config.activation == "gabor"

        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for index in range(depth):
            layer_in = encoded_dim if index == 0 else width + (encoded_dim if index in self.skips else 0)
            # WIRE: the first layer is real, every later layer acts on complex activations.
            dtype = torch.cfloat if complex_hidden and index > 0 else None
            linear = nn.Linear(layer_in, width, dtype=dtype)
            initialize_linear(linear, config, first=index == 0)
            self.linears.append(linear)
            self.norms.append(make_norm(config.norm, width, config.norm_groups))
        self.out_dim = width if out_dim is None else out_dim
        self.head: nn.Linear | None = None
        if out_dim is not None:
            self.head = nn.Linear(width, out_dim, dtype=torch.cfloat if complex_hidden else None)
            initialize_linear(self.head, config, first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        return self.forward_encoded(self.encoding(x.reshape(-1, x.shape[-1]))).reshape(*leading, self.out_dim)

    def forward_encoded(self, encoded: torch.Tensor) -> torch.Tensor:
        """The network after its (parameter-free) encoding; callers with fixed coordinates may
        encode once and call this every step.

        BatchNorm layers run fused with the Linear beside them (`bn_nerf.networks.fused`) wherever
        `fusable` allows: after the activation, BN is folded into the Linear that consumes it;
        before it, BN runs in one Function with the Linear that feeds it. Elsewhere -- hooks that
        must see a layer's input, SyncBatchNorm, torch.func transforms, a trunk's last BN, which
        feeds its caller's heads -- each module is called as itself.
        """
        norm_first = self.config.norm_placement == "before"
        h = encoded
        pending_norm: nn.BatchNorm1d | None = None  # BN after the last activation, not yet applied
        for index, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            skip = encoded.to(h.dtype) if index in self.skips else None
            if pending_norm is not None:
                z = batchnorm_then_linear(h, skip, pending_norm, linear)
                pending_norm = None
            else:
                if skip is not None:
                    h = torch.cat([h, skip], dim=-1)
                if norm_first and isinstance(norm, nn.BatchNorm1d) and fusable(h, linear, norm):
                    h = self.activation(linear_then_batchnorm(h, linear, norm))
                    continue
                z = self._linear(h, linear)
            if norm_first:
                h = self.activation(norm(z))
                continue
            h = self.activation(z)
            consumer = self.linears[index + 1] if index + 1 < self.depth else self.head
            if isinstance(norm, nn.BatchNorm1d) and consumer is not None and fusable(h, norm, consumer):
                pending_norm = norm
            else:
                h = norm(h)
        if self.head is None:
            return h
        out = batchnorm_then_linear(h, None, pending_norm, self.head) if pending_norm is not None else self._linear(h, self.head)
        return out.real if out.is_complex() else out

    @staticmethod
    def _linear(h: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        return fused_linear(h, layer) if fusable(h, layer) else layer(h)
