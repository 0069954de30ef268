"""What every capture reader (transforms.json, COLMAP, LLFF) hands on: all of a capture's frames,
checked, in nerfstudio's camera convention and the capture's own world coordinates, with whatever
the format says about where the content is. dataparser.py normalizes them (extent.py) and picks a
split; nothing downstream knows which format they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nerfstudio.cameras.cameras import Cameras, CameraType

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.extent import Normalization, Pinholes


@dataclass
class CaptureFrames:
    format_name: str
    """how the summary names the format, e.g. "COLMAP model sparse/0" """
    image_filenames: list[Path]
    """the images read, at the resolution read (images_N/ where downscaled)"""
    poses: np.ndarray
    """(N, 4, 4) OpenGL camera-to-world matrices (x right, y up, looking along -z), in the files' world"""
    pinholes: Pinholes
    """(N,) intrinsics at the resolution read"""
    distortion: np.ndarray
    """(N, 6) nerfstudio's distortion parameters (k1, k2, k3, k4, p1, p2)"""
    camera_type: CameraType
    splits: dict[str, np.ndarray]
    """frame indices of each split the capture defines ("train", "val", "test")"""
    bounded: bool
    """every image has alpha, and some of it is transparent"""
    points: Optional[np.ndarray] = None
    """(M, 3) sparse points in the same world"""
    depth_bounds: Optional[np.ndarray] = None
    """(N, 2) each image's near and far depth (LLFF)"""
    mask_filenames: Optional[list[Path]] = None
    applied_transform: Optional[np.ndarray] = None
    """3x4: these poses' world from the original data's (ns-process-data's), for nerfstudio's exports"""
    world_from_files: Optional[np.ndarray] = None
    """3x4: these poses' world from the files' coordinates, where they differ (COLMAP's y down turned to z up)"""
    camera_metadata: dict = field(default_factory=dict)
    downscale_factor: int = 1
    """how many times smaller than the originals the images read are (images_N/)"""

    @property
    def image_size(self) -> str:
        """The images' width x height as read, e.g. "480x360" (and how many other sizes there are)."""
        sizes = sorted({(int(w), int(h)) for w, h in zip(self.pinholes.width, self.pinholes.height)})
        return f"{sizes[0][0]}x{sizes[0][1]}" + (f" (and {len(sizes) - 1} other sizes)" if len(sizes) > 1 else "")

    @property
    def resolution_line(self) -> str:
        """The size the images are read at, for the run's scene line."""
        scale = "full size" if self.downscale_factor == 1 else f"downscaled {self.downscale_factor}x"
        return f"images read at {self.image_size}, {scale} (--downscale-factor overrides)"

    def split_indices(self, split: str, source: Path) -> np.ndarray:
        if split not in self.splits:
            raise InputError(f"{source}: defines no {split} split (it names {', '.join(sorted(self.splits))})")
        return self.splits[split]

    def cameras(self, normalization: Normalization, indices: np.ndarray) -> Cameras:
        """The normalized cameras of frames `indices`."""
        def tensor(values: np.ndarray, dtype=torch.float32) -> torch.Tensor:
            return torch.from_numpy(np.asarray(values)[indices]).to(dtype)

        return Cameras(
            camera_to_worlds=tensor(normalization.camera_to_worlds(self.poses)),
            fx=tensor(self.pinholes.fx)[:, None], fy=tensor(self.pinholes.fy)[:, None],
            cx=tensor(self.pinholes.cx)[:, None], cy=tensor(self.pinholes.cy)[:, None],
            width=tensor(self.pinholes.width, torch.int64)[:, None],
            height=tensor(self.pinholes.height, torch.int64)[:, None],
            distortion_params=tensor(self.distortion),
            camera_type=self.camera_type,
            metadata=dict(self.camera_metadata),
        )
