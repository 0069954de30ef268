"""The checks every format's reader makes of what it reads, each failing with a one-line InputError
that names the file and the field: JSON that parses, numbers that are numbers, poses that are finite
matrices, intrinsics a camera can have."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bn_nerf.io.errors import InputError


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: malformed JSON ({error.msg} at line {error.lineno}, column {error.colno})")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file")


def is_number(value) -> bool:
    """A finite int or float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite_matrix(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`value` as a float array of `shape`, or an InputError saying that `what` is not one."""
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):  # ragged rows or entries that are not numbers
        matrix = None
    if matrix is None or matrix.shape != shape:
        raise InputError(f"{what} is not a {'x'.join(map(str, shape))} matrix of numbers")
    if not np.isfinite(matrix).all():
        raise InputError(f"{what} is not all finite")
    return matrix


def check_pinhole(where: str, fx, fy, cx, cy, width: int, height: int) -> None:
    """Focal lengths a camera can have and a principal point inside its image."""
    for name, focal in (("fl_x", fx), ("fl_y", fy)):
        if not is_number(focal) or focal <= 0:
            raise InputError(f"{where}: focal length {name} must be a positive number; got {focal!r}")
    for name, value in (("cx", cx), ("cy", cy)):
        if not is_number(value):
            raise InputError(f"{where}: principal point {name} must be a number; got {value!r}")
    if not (0 < cx < width and 0 < cy < height):
        raise InputError(f"{where}: principal point (cx, cy) = ({cx:g}, {cy:g}) lies outside the {width}x{height} image")


def check_image_size(where: str, image: Path, size: tuple[int, int], expected: tuple[int, int]) -> None:
    if tuple(size) != tuple(expected):
        raise InputError(f"{where}: {image} is {size[0]}x{size[1]}, but the cameras say {expected[0]}x{expected[1]}")
