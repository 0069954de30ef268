"""The one typed description of a coordinate network; presets and overrides produce it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from bn_nerf.networks.norms import NORM_KINDS

ACTIVATIONS = ("relu", "sine", "gabor")
ENCODINGS = ("none", "pe", "gauss")
PLACEMENTS = ("after", "before")
ARCHITECTURES = ("mlp", "mfn")
MFN_FILTERS = ("fourier", "gabor")
INIT_SCHEMES = ("method", "torch_default")


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that distinguishes the paper's methods from one another.

    `depth` hidden layers of `width` features, each a Linear followed by the activation, with the
    normalization placed after the activation (the paper's text: "one BatchNorm layer immediately
    after the ReLU") or before it (the authors' public code: Linear -> BN -> ReLU); then one Linear
    output layer. So a "10 x 28" net has 10 hidden Linear layers and an output layer.
    """

    architecture: Literal["mlp", "mfn"] = "mlp"
    activation: Literal["relu", "sine", "gabor"] = "relu"
    norm: Literal["none", "batch", "layer", "group", "cross"] = "none"
    norm_placement: Literal["after", "before"] = "after"
    norm_groups: int = 4
    encoding: Literal["none", "pe", "gauss"] = "none"
    pe_octaves: int = 10
    fourier_features: int = 256
    fourier_scale: float = 10.0
    encoding_seed: int = 0
    # Multiplies the input coordinates before anything else sees them (the encoding, SIREN's and
    # WIRE's first layer, MFN's filters), so it scales every frequency the network applies to its
    # input -- SIREN's first-layer omega0, WIRE's first-layer omega and s -- while hidden layers keep
    # theirs (there omega0 is a gain on features, not a frequency of the coordinates). 64/512 puts a
    # 64-pixel input at the pixel pitch the paper's frequencies were chosen for at 512 pixels.
    coordinate_scale: float = 1.0
    sine_omega0: float = 30.0
    wire_omega: float = 20.0
    wire_scale: float = 10.0
    mfn_filter: Literal["fourier", "gabor"] = "fourier"
    mfn_input_scale: float = 256.0
    mfn_weight_scale: float = 1.0
    mfn_gabor_alpha: float = 6.0
    mfn_gabor_beta: float = 1.0
    # Layers (0-based hidden index) whose input also receives the encoded coordinates (NeRF's skip).
    skip_connections: tuple[int, ...] = ()
    # "method": the activation family's own initialization (LeCun normal for ReLU nets, SIREN's for
    # sine nets, PyTorch's default for WIRE). "torch_default": PyTorch's nn.Linear default for every
    # layer, which is what nerfstudio's vanilla-nerf uses; bn-nerf needs it to reproduce that baseline.
    init_scheme: Literal["method", "torch_default"] = "method"

    def replace(self, **overrides) -> "NetworkConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown network option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)

    def validate(self) -> "NetworkConfig":
        choices = {
            "architecture": ARCHITECTURES,
            "activation": ACTIVATIONS,
            "norm": NORM_KINDS,
            "norm_placement": PLACEMENTS,
            "encoding": ENCODINGS,
            "mfn_filter": MFN_FILTERS,
            "init_scheme": INIT_SCHEMES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} '{getattr(self, name)}'; choose from {', '.join(allowed)}")
        if not self.coordinate_scale > 0:
            raise ValueError(f"coordinate_scale must be > 0, got {self.coordinate_scale}")
        if self.activation == "gabor" and self.norm != "none":
            raise ValueError("normalization is not defined for WIRE's complex-valued Gabor activations")
        if self.architecture == "mfn" and (self.norm != "none" or self.encoding != "none"):
            raise ValueError("multiplicative filter networks take neither a normalization nor an input encoding")
        return self
