"""nerfstudio's Blender parser, preceded by a check of the folder that turns bad input into a
one-line error naming the file (nerfstudio's own parser fails with a traceback, or silently on
images of mixed sizes since it reads only the first image's size)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

from PIL import Image

from nerfstudio.data.dataparsers.blender_dataparser import Blender, BlenderDataParserConfig

from bn_nerf.io.errors import InputError

SPLITS = ("train", "val", "test")


def check_blender_split(data: Path, split: str) -> None:
    """Raise InputError (one line, naming the file) unless `data` holds a readable Blender split:
    transforms_<split>.json with camera_angle_x and frames whose PNGs exist and share one size."""
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
    if not meta["frames"]:
        raise InputError(f"{transforms}: lists no frames")
    first_size = None
    for index, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise InputError(f"{transforms}: frame {index} needs 'file_path' and 'transform_matrix'")
        # The same name mapping as nerfstudio's Blender parser.
        image_path = data / Path(frame["file_path"].replace("./", "") + ".png")
        if not image_path.is_file():
            raise InputError(f"{transforms}: frame {index} names missing image {image_path}")
        try:
            with Image.open(image_path) as image:
                size = image.size
        except OSError as error:
            raise InputError(f"{image_path}: unreadable image ({error})")
        if first_size is None:
            first_size = (size, image_path)
        elif size != first_size[0]:
            raise InputError(
                f"{transforms}: images of mixed sizes: {first_size[1]} is {first_size[0][0]}x{first_size[0][1]}, "
                f"{image_path} is {size[0]}x{size[1]}"
            )


@dataclass
class CheckedBlenderDataParserConfig(BlenderDataParserConfig):
    """nerfstudio's blender-data parser with the folder checked first."""

    _target: Type = field(default_factory=lambda: CheckedBlender)


class CheckedBlender(Blender):
    config: CheckedBlenderDataParserConfig

    def _generate_dataparser_outputs(self, split="train"):
        try:
            check_blender_split(self.config.data, split)
        except InputError as error:
            # Reached from ns-train, ns-eval, ns-render and ns-viewer alike: report as their CLIs would
            # a usage error, on one line, without the traceback of the call chain.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        return super()._generate_dataparser_outputs(split)
