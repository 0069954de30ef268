"""nerfstudio's Blender parser, preceded by a check of everything it and nerfstudio's dataset will
read, which turns bad input into a one-line error naming the file. nerfstudio's own parser fails
with a traceback (a truncated PNG, a transform that is not 4x4), or silently: it reads only the first
image's size, so images of mixed sizes train on wrong cameras, and a palette PNG trains on its
palette indices as gray levels.

The check decodes every image completely, in a thread pool (Pillow decodes without the GIL), and
once per process: a decoded file is remembered by its path, size and modification time, so the
check ns-train makes before it writes a run folder (trainer.py) and the parser's own check of each
split afterwards decode each image once between them.
"""

from __future__ import annotations

import functools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Type

import numpy as np
from PIL import Image

from nerfstudio.data.dataparsers.blender_dataparser import Blender, BlenderDataParserConfig

from bn_nerf.io.errors import InputError, exiting_on_input_error
from bn_nerf.runtime import usable_cores

SPLITS = ("train", "val", "test")
# What ns-train reads: the training split and, for its evaluations during training, the val split.
TRAINING_SPLITS = ("train", "val")
# nerfstudio's dataset turns an image into 8-bit (H, W, 3 or 4) with numpy; these modes are the
# ones that come out as colour (grayscale is repeated to RGB). It refuses two-channel images with
# an assert and reads a palette image's indices as gray levels.
READABLE_MODES = ("L", "RGB", "RGBA")


def check_blender_split(data: Path, split: str) -> None:
    """Raise InputError (one line, naming the file) unless `data` holds a split nerfstudio reads
    whole: transforms_<split>.json with a field of view in (0, pi) and frames whose 4x4 finite
    transforms name PNGs that decode completely, in 8-bit gray, RGB or RGBA, all of one size."""
    if not data.is_dir():
        raise InputError(f"{data}: no such data folder (expected a Blender-format scene)")
    transforms = data / f"transforms_{split}.json"
    if not transforms.is_file():
        raise InputError(
            f"{transforms}: missing; a Blender-format folder holds " + ", ".join(f"transforms_{s}.json" for s in SPLITS)
        )
    try:
        meta = json.loads(transforms.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{transforms}: malformed JSON ({error.msg} at line {error.lineno}, column {error.colno})")
    except UnicodeDecodeError:
        raise InputError(f"{transforms}: not a text file")
    if not isinstance(meta, dict) or "camera_angle_x" not in meta or not isinstance(meta.get("frames"), list):
        raise InputError(f"{transforms}: needs 'camera_angle_x' and a list of 'frames'")
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
        raise InputError(f"{transforms}: camera_angle_x must be the horizontal field of view in radians, "
                         f"between 0 and pi; got {angle!r}")
    if not meta["frames"]:
        raise InputError(f"{transforms}: lists no frames")
    image_paths = [_frame_image(data, transforms, index, frame) for index, frame in enumerate(meta["frames"])]
    with ThreadPoolExecutor(min(usable_cores(), len(image_paths))) as pool:
        # map() yields in frame order, so the error reported is that of the first bad frame.
        sizes = list(pool.map(_decoded_size, image_paths))
    for image_path, size in zip(image_paths, sizes):
        if size != sizes[0]:
            raise InputError(
                f"{transforms}: images of mixed sizes: {image_paths[0]} is {sizes[0][0]}x{sizes[0][1]}, "
                f"{image_path} is {size[0]}x{size[1]}"
            )


def _frame_image(data: Path, transforms: Path, index: int, frame) -> Path:
    """The image a frame names, once its transform is known to be a finite 4x4 matrix."""
    if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or "transform_matrix" not in frame:
        raise InputError(f"{transforms}: frame {index} needs a 'file_path' string and a 'transform_matrix'")
    try:
        matrix = np.array(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):  # ragged rows or entries that are not numbers
        matrix = None
    if matrix is None or matrix.shape != (4, 4):
        raise InputError(f"{transforms}: frame {index}'s transform_matrix is not a 4x4 matrix of numbers")
    if not np.isfinite(matrix).all():
        raise InputError(f"{transforms}: frame {index}'s transform_matrix is not all finite")
    # The same name mapping as nerfstudio's Blender parser.
    image_path = data / Path(frame["file_path"].replace("./", "") + ".png")
    if not image_path.is_file():
        raise InputError(f"{transforms}: frame {index} names missing image {image_path}")
    return image_path


def _decoded_size(image_path: Path) -> tuple[int, int]:
    status = image_path.stat()
    return _decode(image_path, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _decode(image_path: Path, byte_size: int, modified_ns: int) -> tuple[int, int]:
    """Decode the whole image (a truncated file fails only here, not at its header) and return its
    size. Keyed on the file's size and modification time too, so a file replaced since is decoded
    again; an error is not cached."""
    try:
        with Image.open(image_path) as image:
            image.load()
            mode, size = image.mode, image.size
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's kinds for damaged and unknown files
        raise InputError(f"{image_path}: unreadable image ({error})") from None
    if mode not in READABLE_MODES:
        raise InputError(f"{image_path}: a {mode} image; nerfstudio reads 8-bit grayscale, RGB or RGBA")
    return size


def exit_on_bad_scene(data: Path, splits: Iterable[str]) -> None:
    """Check the splits; bad input ends the run on one line, exit status 2."""
    with exiting_on_input_error():
        for split in splits:
            check_blender_split(data, split)


@dataclass
class CheckedBlenderDataParserConfig(BlenderDataParserConfig):
    """nerfstudio's blender-data parser with the folder checked first."""

    _target: Type = field(default_factory=lambda: CheckedBlender)


class CheckedBlender(Blender):
    config: CheckedBlenderDataParserConfig

    def _generate_dataparser_outputs(self, split="train"):
        # Reached from ns-train, ns-eval, ns-render and ns-viewer alike.
        exit_on_bad_scene(self.config.data, [split])
        return super()._generate_dataparser_outputs(split)
