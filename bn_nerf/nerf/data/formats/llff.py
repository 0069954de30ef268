"""LLFF captures (the forward-facing scenes of NeRF's real-world set): poses_bounds.npy beside
images/ or downscaled images_N/ folders (often images_N alone).

poses_bounds.npy holds one row of 17 numbers per image, in the images' sorted file-name order: a
3x5 matrix [R | t | (h, w, focal)], row-major, whose rotation columns are the camera's (down, right,
back) axes and whose (h, w, focal) is for the full-resolution images, then the near and far depth of
what the image sees. nerfstudio has no LLFF parser; this one gives nerfstudio's cameras (OpenGL
axes: right, up, back) with the focal length scaled to the images actually read, and holds out every
8th image for evaluation, as NeRF does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from nerfstudio.cameras.cameras import CameraType

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.extent import Pinholes
from bn_nerf.nerf.data.formats.checks import check_pinhole
from bn_nerf.nerf.data.formats.frames import CaptureFrames
from bn_nerf.nerf.data.formats.images import (MAX_AUTO_RESOLUTION, decode_all, downscale_factor_to_read,
                                              make_missing_downscaled)

POSES_BOUNDS = "poses_bounds.npy"
IMAGES = "images"
# LLFF's own loader reads these; anything else in the folder is not an image of the capture.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# NeRF's LLFF test views: every 8th image.
EVAL_INTERVAL = 8
ROW_LENGTH = 17


def read_llff(data: Path, downscale_factor: Optional[int] = None,
              max_auto_side: int = MAX_AUTO_RESOLUTION) -> CaptureFrames:
    """Check and read the LLFF capture of folder `data`."""
    poses_bounds_path = data / POSES_BOUNDS
    try:
        rows = np.load(poses_bounds_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{poses_bounds_path}: unreadable ({error})") from None
    if rows.ndim != 2 or rows.shape[1] != ROW_LENGTH or not np.issubdtype(rows.dtype, np.number):
        raise InputError(f"{poses_bounds_path}: expected one row of {ROW_LENGTH} numbers per image "
                         f"(a 3x5 [R | t | h, w, focal] and near, far); got an array of shape {rows.shape}")
    for index, row in enumerate(rows):
        if not np.isfinite(row).all():
            raise InputError(f"{poses_bounds_path}: row {index} is not {ROW_LENGTH} finite numbers")

    full_size_names = _image_names(data / IMAGES)

    def folder_of(factor: int) -> Path:
        return data / (IMAGES if factor == 1 else f"{IMAGES}_{factor}")

    def downscaled(factor: int) -> list[Path]:
        names = full_size_names or _image_names(folder_of(factor))
        return [folder_of(factor) / name for name in names]

    originals = [data / IMAGES / name for name in full_size_names]
    factor = downscale_factor_to_read(originals, downscaled, data, downscale_factor, max_auto_side)
    read = downscaled(factor)
    if factor > 1 and full_size_names:
        make_missing_downscaled(originals, read, factor)
    if len(read) != len(rows):
        raise InputError(f"{poses_bounds_path}: {len(rows)} rows for {len(read)} images in {folder_of(factor)}")
    sizes = [image.size for image in decode_all(read)]

    matrices = rows[:, :15].reshape(-1, 3, 5)
    heights, widths, focals = matrices[:, 0, 4], matrices[:, 1, 4], matrices[:, 2, 4]
    bounds = rows[:, 15:]
    scales = np.array([size[0] for size in sizes]) / np.where(widths > 0, widths, np.nan)
    for index, (path, size) in enumerate(zip(read, sizes)):
        where = f"{poses_bounds_path}: row {index}"
        if heights[index] <= 0 or widths[index] <= 0 or focals[index] <= 0:
            raise InputError(f"{where}: image size and focal length (h, w, focal) = "
                             f"({heights[index]:g}, {widths[index]:g}, {focals[index]:g}) must be positive")
        if abs(heights[index] * scales[index] - size[1]) > 1:
            raise InputError(f"{where}: {path} is {size[0]}x{size[1]}, not the {widths[index]:g}x{heights[index]:g} "
                             "the row states, at any one scale")
        if not 0 < bounds[index, 0] < bounds[index, 1]:
            raise InputError(f"{where}: near and far bounds ({bounds[index, 0]:g}, {bounds[index, 1]:g}) "
                             "must satisfy 0 < near < far")
    width = np.array([size[0] for size in sizes])
    height = np.array([size[1] for size in sizes])
    fx = focals * scales
    for index in range(len(rows)):
        check_pinhole(f"{poses_bounds_path}: row {index}", fx[index], fx[index], width[index] / 2, height[index] / 2,
                      width[index], height[index])

    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    down, right, back = matrices[:, :, 0], matrices[:, :, 1], matrices[:, :, 2]
    poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2], poses[:, :3, 3] = right, -down, back, matrices[:, :, 3]
    indices = np.arange(len(rows))
    evaluation = indices[indices % EVAL_INTERVAL == 0]
    train = indices[indices % EVAL_INTERVAL != 0]
    return CaptureFrames(
        format_name=f"LLFF capture ({folder_of(factor).name}/)",
        image_filenames=read,
        downscale_factor=factor,
        poses=poses,
        pinholes=Pinholes(fx=fx, fy=fx.copy(), cx=width / 2, cy=height / 2, width=width, height=height),
        distortion=np.zeros((len(rows), 6)),
        camera_type=CameraType.PERSPECTIVE,
        splits={"train": train, "val": evaluation, "test": evaluation},
        bounded=False,
        depth_bounds=bounds.copy(),
    )


def _image_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(path.name for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
