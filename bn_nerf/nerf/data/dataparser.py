"""The methods' dataparser: it recognises the scene's format from what the data folder holds
(formats/detect.py), checks the whole scene (bad input ends in one line naming the file, exit
status 2), and puts the scene's extent (extent.py) into the outputs: a Blender scene exactly as
nerfstudio's blender-data reads it, a capture (transforms.json, COLMAP, LLFF) normalized so that the
scene box [-1, 1]^3 holds its cameras and the bulk of its content.

Registered as the nerfstudio dataparser `bn-scene-data` too, so nerfstudio's own methods train on the
same frames and normalization: `ns-train nerfacto ... bn-scene-data --data DIR`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import numpy as np
import torch

from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.rich_utils import CONSOLE

from bn_nerf.io.errors import InputError, exiting_on_input_error
from bn_nerf.nerf.data.extent import Normalization, normalize_capture
from bn_nerf.nerf.data.formats.blender import (TRAINING_SPLITS, CheckedBlender, CheckedBlenderDataParserConfig,
                                              check_blender_scene)
from bn_nerf.nerf.data.formats.detect import CAPTURE_READERS, detect_format
from bn_nerf.nerf.data.formats.frames import CaptureFrames
from bn_nerf.nerf.data.formats.images import MAX_AUTO_RESOLUTION
from bn_nerf.runtime import available_memory_bytes


@dataclass
class SceneDataParserConfig(DataParserConfig):
    """A Blender scene, a nerfstudio / instant-ngp transforms.json, a COLMAP model or an LLFF capture,
    recognised from the folder."""

    _target: Type = field(default_factory=lambda: SceneDataParser)
    data: Path = Path()
    """the scene's folder"""
    downscale_factor: Optional[int] = None
    """read a capture's images_N/ (made with Pillow where missing); by default its full-size images, halved
    until max_auto_side pixels or fewer across, or the images_N/ it holds where it has no images/ (Blender:
    full size)"""
    max_auto_side: int = MAX_AUTO_RESOLUTION
    """without --downscale-factor, the longest side a capture's images are read at (nerfstudio's 1600;
    the CPU presets': CPU_MAX_IMAGE_SIDE)"""


class SceneDataParser(DataParser):
    config: SceneDataParserConfig

    def __init__(self, config: SceneDataParserConfig) -> None:
        super().__init__(config)
        # A capture is read and normalized once for all its splits, so that they share one normalization.
        self.capture: Optional[tuple[CaptureFrames, Normalization]] = None

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        # Reached from ns-train, ns-eval, ns-render and ns-viewer alike.
        with exiting_on_input_error():
            scene_format = detect_format(self.config.data)
            if scene_format == "blender":
                outputs = CheckedBlender(CheckedBlenderDataParserConfig(data=self.config.data)).get_dataparser_outputs(split)
            else:
                outputs = self.capture_outputs(scene_format, split)
        if split == "train":
            CONSOLE.print(outputs.metadata["scene_extent"].summary
                          + ("" if self.capture is None else f"; {self.capture[0].resolution_line}"))
        return outputs

    def capture_outputs(self, scene_format: str, split: str) -> DataparserOutputs:
        if self.capture is None:
            frames = CAPTURE_READERS[scene_format](self.config.data, self.config.downscale_factor,
                                                   self.config.max_auto_side)
            normalization = normalize_capture(frames.format_name, frames.poses, frames.pinholes, frames.bounded,
                                              points=frames.points, depth_bounds=frames.depth_bounds,
                                              world_from_files=frames.world_from_files)
            self.capture = frames, normalization
        frames, normalization = self.capture
        indices = frames.split_indices(split, self.config.data)
        transform = normalization.transform
        if frames.applied_transform is not None:
            # As nerfstudio's parsers do: the transform from the original data's coordinates, for its exports.
            transform = transform @ np.concatenate([frames.applied_transform, [[0.0, 0.0, 0.0, 1.0]]])
        return DataparserOutputs(
            image_filenames=[frames.image_filenames[index] for index in indices],
            cameras=frames.cameras(normalization, indices),
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            mask_filenames=None if frames.mask_filenames is None else [frames.mask_filenames[i] for i in indices],
            dataparser_transform=torch.from_numpy(transform).float(),
            dataparser_scale=normalization.scale,
            metadata={"scene_extent": normalization.extent},
        )


def check_scene(data: Path, downscale_factor: Optional[int] = None, max_auto_side: int = MAX_AUTO_RESOLUTION) -> None:
    """Check everything a training run will read of the scene in `data` (InputError otherwise)."""
    scene_format = detect_format(data)
    if scene_format == "blender":
        check_blender_scene(data, TRAINING_SPLITS)
    else:
        check_images_fit_memory(data, CAPTURE_READERS[scene_format](data, downscale_factor, max_auto_side))


# What a CPU preset's training process holds besides the cached images (PyTorch, nerfstudio, the
# field, the optimizer, a step's activations): the embedded scene's run peaked at about 2 GB.
TRAINING_MEMORY_BESIDE_IMAGES = 2 * 2**30


def check_images_fit_memory(data: Path, frames: CaptureFrames) -> None:
    """nerfstudio caches every image of both splits in memory as float32 RGB(A): refuse, in one line
    and before training, a capture whose cache would not fit the memory available now (rather than
    be killed by the kernel mid-run), naming the factor that would fit."""
    available = available_memory_bytes()
    if available is None:
        return
    channels = 4 if frames.bounded else 3
    image_bytes = int((frames.pinholes.width.astype(np.int64) * frames.pinholes.height).sum()) * channels * 4
    if image_bytes + TRAINING_MEMORY_BESIDE_IMAGES <= available:
        return
    # Each halving of the sides quarters the cache.
    halvings = 0
    while halvings < 6 and image_bytes / 4**halvings + TRAINING_MEMORY_BESIDE_IMAGES > available:
        halvings += 1
    raise InputError(f"{data}: {len(frames.image_filenames)} images at {frames.image_size} need about "
                     f"{(image_bytes + TRAINING_MEMORY_BESIDE_IMAGES) / 2**30:.1f} GB to train on (nerfstudio "
                     f"caches them as float32) and {available / 2**30:.1f} GB of memory is available; read them "
                     f"smaller with --downscale-factor {frames.downscale_factor * 2**halvings}")


CHECKED_PARSERS = (SceneDataParserConfig, CheckedBlenderDataParserConfig)


def exit_on_bad_scene(parser: DataParserConfig, data: Path) -> None:
    """Check the scene in `data` as `parser` (one of CHECKED_PARSERS) will read it; bad input ends
    the run on one line, exit status 2."""
    with exiting_on_input_error():
        if isinstance(parser, CheckedBlenderDataParserConfig):
            check_blender_scene(data, TRAINING_SPLITS)
        else:
            check_scene(data, parser.downscale_factor, parser.max_auto_side)


bn_scene_data = DataParserSpecification(
    config=SceneDataParserConfig(),
    description="bn-nerf's scene reader: Blender, nerfstudio/instant-ngp transforms.json, COLMAP or LLFF, recognised "
                "from the folder, checked whole, captures normalized so the scene box holds cameras and content",
)
