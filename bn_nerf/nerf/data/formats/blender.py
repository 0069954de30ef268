"""Blender-format scenes (transforms_{train,val,test}.json, RGBA PNGs): nerfstudio's Blender parser,
preceded by a check of everything it and nerfstudio's dataset will read, which turns bad input into
a one-line error naming the file. nerfstudio's own parser fails with a traceback (a truncated PNG, a
transform that is not 4x4), or silently: it reads only the first image's size, so images of mixed
sizes train on wrong cameras, and a palette PNG trains on its palette indices as gray levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Type

from nerfstudio.data.dataparsers.blender_dataparser import Blender, BlenderDataParserConfig

from bn_nerf.io.errors import InputError, exiting_on_input_error
from bn_nerf.nerf.data.extent import BLENDER_EXTENT
from bn_nerf.nerf.data.formats.checks import finite_matrix, read_json
from bn_nerf.nerf.data.formats.images import decode_all

SPLITS = ("train", "val", "test")
# What ns-train reads: the training split and, for its evaluations during training, the val split.
TRAINING_SPLITS = ("train", "val")


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
    meta = read_json(transforms)
    if not isinstance(meta, dict) or "camera_angle_x" not in meta or not isinstance(meta.get("frames"), list):
        raise InputError(f"{transforms}: needs 'camera_angle_x' and a list of 'frames'")
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
        raise InputError(f"{transforms}: camera_angle_x must be the horizontal field of view in radians, "
                         f"between 0 and pi; got {angle!r}")
    if not meta["frames"]:
        raise InputError(f"{transforms}: lists no frames")
    image_paths = [_frame_image(data, transforms, index, frame) for index, frame in enumerate(meta["frames"])]
    sizes = [image.size for image in decode_all(image_paths)]
    for image_path, size in zip(image_paths, sizes):
        if size != sizes[0]:
            raise InputError(
                f"{transforms}: images of mixed sizes: {image_paths[0]} is {sizes[0][0]}x{sizes[0][1]}, "
                f"{image_path} is {size[0]}x{size[1]}"
            )


def check_blender_scene(data: Path, splits: Iterable[str] = TRAINING_SPLITS) -> None:
    for split in splits:
        check_blender_split(data, split)


def _frame_image(data: Path, transforms: Path, index: int, frame) -> Path:
    """The image a frame names, once its transform is known to be a finite 4x4 matrix."""
    if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or "transform_matrix" not in frame:
        raise InputError(f"{transforms}: frame {index} needs a 'file_path' string and a 'transform_matrix'")
    finite_matrix(frame["transform_matrix"], (4, 4), f"{transforms}: frame {index}'s transform_matrix")
    # The same name mapping as nerfstudio's Blender parser.
    image_path = data / Path(frame["file_path"].replace("./", "") + ".png")
    if not image_path.is_file():
        raise InputError(f"{transforms}: frame {index} names missing image {image_path}")
    return image_path


@dataclass
class CheckedBlenderDataParserConfig(BlenderDataParserConfig):
    """nerfstudio's blender-data parser with the folder checked first."""

    _target: Type = field(default_factory=lambda: CheckedBlender)


class CheckedBlender(Blender):
    """nerfstudio's Blender parser (scene box [-1.5, 1.5]^3, white background), the split checked
    first, and the scene's extent (bounded, near 2, far 6) in the outputs' metadata."""

    config: CheckedBlenderDataParserConfig

    def _generate_dataparser_outputs(self, split="train"):
        # Reached from ns-train, ns-eval, ns-render and ns-viewer alike.
        with exiting_on_input_error():
            check_blender_split(self.config.data, split)
        outputs = super()._generate_dataparser_outputs(split)
        outputs.metadata["scene_extent"] = BLENDER_EXTENT
        return outputs
