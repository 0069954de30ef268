"""Loading user files with one-line errors that name the file and the problem.

Image convention: float32 in [0, 1], shape (H, W, C). Grayscale stays one channel, RGB three;
an alpha channel is dropped (the colour is fitted as stored); 8-bit values are divided by 255 and
16-bit ones by 65535, so a 16-bit image keeps its precision. The format is read from the file's
content, not its name, so a JPEG saved as `.png` loads as the JPEG it is.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from bn_nerf.io.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def require_file(path: Path | str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    return path


def require_output_folder(path: Path | str) -> Path:
    """`path`, once its folder is known to exist: checked before any work whose result goes there."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: no such folder {path.parent}")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file name")
    return path


def to_unit_float(pixels: np.ndarray, source: Path | str) -> np.ndarray:
    """Integer or float pixels -> float32 in [0, 1] by the convention above."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise InputError(f"{source}: pixel values are not all finite")
        return np.clip(pixels.astype(np.float32), 0.0, 1.0)
    raise InputError(f"{source}: unsupported pixel type {pixels.dtype} (use 8- or 16-bit images)")


def load_image(path: Path | str) -> np.ndarray:
    """An image file as float32 (H, W, C) in [0, 1], C = 1 (grayscale) or 3 (colour)."""
    path = require_file(path)
    try:
        pixels = np.asarray(iio.imread(path))
    except Exception as error:  # imageio raises many kinds for files that are not images
        raise InputError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    if pixels.ndim == 3 and pixels.shape[0] > 1 and pixels.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{path}: holds {pixels.shape[0]} frames or an unsupported layout {pixels.shape}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{path}: unsupported image layout {pixels.shape}")
    if pixels.shape[-1] in (2, 4):  # gray+alpha or RGBA: drop alpha
        pixels = pixels[..., :-1]
    if min(pixels.shape[:2]) < 2:
        raise InputError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} pixels; need at least 2x2")
    return to_unit_float(pixels, path)


def save_image(path: Path | str, pixels: np.ndarray) -> None:
    """float [0, 1] (H, W) or (H, W, C) -> 8-bit PNG."""
    pixels = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    iio.imwrite(path, np.round(pixels * 255).astype(np.uint8))
