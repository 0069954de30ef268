"""Loading 3D volumes (MRI) with one-line errors: NumPy `.npy` and NIfTI (`.nii`, `.nii.gz`).

Convention: float32 (D, H, W), finite, rescaled to [0, 1] by its minimum and maximum (intensities
of MR images have no absolute unit). Trailing axes of length 1 (a single-frame 4-D NIfTI) are
dropped; anything else that is not 3-D is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import require_file

VOLUME_SUFFIXES = (".npy", ".nii", ".nii.gz")


def _read_array(path: Path) -> np.ndarray:
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except Exception as error:  # NumPy raises several kinds for files that are not arrays
            raise InputError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from None
    if name.endswith((".nii", ".nii.gz")):
        try:
            import nibabel
        except ImportError:
            raise InputError(f"{path}: reading NIfTI needs the nibabel package (pip install nibabel)") from None
        try:
            return np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
        except Exception as error:  # nibabel raises several kinds for damaged files
            raise InputError(f"{path}: not a readable NIfTI volume ({type(error).__name__}: {error})") from None
    raise InputError(f"{path}: unknown volume format; use one of {', '.join(VOLUME_SUFFIXES)}")


def unit_volume(array: np.ndarray, source: Path | str) -> np.ndarray:
    """Any real 3-D array -> float32 in [0, 1] by the convention above."""
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"{source}: expected a 3-D volume, got shape {array.shape}")
    if min(array.shape) < 2:
        raise InputError(f"{source}: volume is {'x'.join(map(str, array.shape))}; need at least 2 voxels per axis")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise InputError(f"{source}: unsupported voxel type {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{source}: voxel values are not all finite")
    low, high = array.min(), array.max()
    if high <= low:
        raise InputError(f"{source}: volume is constant ({low}); nothing to reconstruct")
    return ((array - low) / (high - low)).astype(np.float32)


def load_volume(path: Path | str) -> np.ndarray:
    """A volume file as float32 (D, H, W) in [0, 1]."""
    path = require_file(path)
    return unit_volume(_read_array(path), path)
