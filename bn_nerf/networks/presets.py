"""Method names -> network configurations. A method is a name here, never a copied file."""

from __future__ import annotations

from torch import nn

from bn_nerf.networks.config import NetworkConfig
from bn_nerf.networks.mfn import MultiplicativeFilterNetwork
from bn_nerf.networks.mlp import CoordinateMLP

_BASE = NetworkConfig()
_NORM_NAMES = {"bn": "batch", "ln": "layer", "gn": "group", "cn": "cross"}

PRESETS: dict[str, NetworkConfig] = {
    "relu": _BASE,
    "pe": _BASE.replace(encoding="pe"),
    "siren": _BASE.replace(activation="sine"),
    "wire": _BASE.replace(activation="gabor"),
    "mfn": _BASE.replace(architecture="mfn"),
}
for _short, _kind in _NORM_NAMES.items():
    PRESETS[_short] = _BASE.replace(norm=_kind)
    PRESETS[f"{_short}+pe"] = _BASE.replace(norm=_kind, encoding="pe")

# The methods of the paper's Table 1, in its column order.
PAPER_METHODS: tuple[str, ...] = ("siren", "relu", "bn", "mfn", "wire", "pe", "bn+pe")


def method_config(method: str, **overrides) -> NetworkConfig:
    """The preset for `method` with `overrides` applied, validated."""
    if method not in PRESETS:
        raise ValueError(f"unknown method '{method}'; choose from {', '.join(PRESETS)}")
    return PRESETS[method].replace(**overrides).validate()


def build_from_config(config: NetworkConfig, in_dim: int, out_dim: int | None, depth: int, width: int) -> nn.Module:
    config.validate()
    architecture = MultiplicativeFilterNetwork if config.architecture == "mfn" else CoordinateMLP
    return architecture(config, in_dim, out_dim, depth, width)


def build_network(method: str, in_dim: int, out_dim: int | None, depth: int, width: int, **overrides) -> nn.Module:
    """Build the coordinate network of a named method, e.g. build_network("bn+pe", 2, 3, 10, 28).

    `overrides` are NetworkConfig fields (norm_placement="before", pe_octaves=4, ...).
    """
    return build_from_config(method_config(method, **overrides), in_dim, out_dim, depth, width)
