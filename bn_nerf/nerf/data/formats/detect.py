"""Which format a data folder holds, by the files in it, and the reader of each capture format.

The order settles folders that hold two: a Blender scene first, then a transforms.json (which
ns-process-data writes beside the COLMAP model it came from), then poses_bounds.npy (LLFF's release
folders keep the sparse/0 model it came from, and the LLFF poses and bounds are what results on
those scenes are reported with), then a COLMAP model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Optional

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.formats.colmap import find_model, read_colmap
from bn_nerf.nerf.data.formats.frames import CaptureFrames
from bn_nerf.nerf.data.formats.llff import POSES_BOUNDS, read_llff
from bn_nerf.nerf.data.formats.transforms import TRANSFORMS, read_transforms

SceneFormat = Literal["blender", "nerfstudio", "colmap", "llff"]
# (folder, --downscale-factor or None, the longest side read without one) -> the capture's frames
CaptureReader = Callable[[Path, Optional[int], int], CaptureFrames]
CAPTURE_READERS: dict[SceneFormat, CaptureReader] = {
    "nerfstudio": read_transforms,
    "colmap": read_colmap,
    "llff": read_llff,
}
NO_FORMAT = (
    "no recognised scene format: expected transforms_train.json (Blender), transforms.json (nerfstudio/instant-ngp), "
    "sparse/0 or colmap/sparse/0 (COLMAP), or poses_bounds.npy (LLFF)"
)


def detect_format(data: Path) -> SceneFormat:
    if data.is_file() and data.suffix == ".json":
        return "nerfstudio"  # a transforms file named directly, as nerfstudio-data allows
    if not data.is_dir():
        raise InputError(f"{data}: no such data folder")
    if (data / "transforms_train.json").is_file():
        return "blender"
    if (data / TRANSFORMS).is_file():
        return "nerfstudio"
    if (data / POSES_BOUNDS).is_file():
        return "llff"
    if find_model(data) is not None:
        return "colmap"
    raise InputError(f"{data}: {NO_FORMAT}")
