"""Everything that is a coordinate network, and nothing else: this package imports no other part of bn_nerf."""

from bn_nerf.networks.config import NetworkConfig
from bn_nerf.networks.folding import fold_normalization
from bn_nerf.networks.norms import convert_to_sync_batchnorm, reestimate_batchnorm
from bn_nerf.networks.size import stored_value_count
from bn_nerf.networks.presets import PAPER_METHODS, PRESETS, build_from_config, build_network, method_config

__all__ = [
    "NetworkConfig",
    "PAPER_METHODS",
    "PRESETS",
    "build_from_config",
    "build_network",
    "convert_to_sync_batchnorm",
    "fold_normalization",
    "method_config",
    "reestimate_batchnorm",
    "stored_value_count",
]
