"""bn-nerf: batch-normalized coordinate networks (CVPR 2024, "Batch Normalization Alleviates the
Spectral Bias in Coordinate Networks") for images, CT, MRI, occupancy and nerfstudio NeRFs."""

from bn_nerf.networks import PRESETS, NetworkConfig, build_network, fold_normalization, reestimate_batchnorm

__all__ = ["PRESETS", "NetworkConfig", "build_network", "fold_normalization", "reestimate_batchnorm"]
__version__ = "0.1.0"
