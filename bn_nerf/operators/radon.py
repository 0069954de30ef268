"""A differentiable parallel-beam projector (the Radon transform) for any set of angles.

It reproduces `skimage.transform.radon`'s geometry so that scikit-image's filtered back-projection
(`iradon`) reads its sinograms: the image is embedded in a square of side ceil(sqrt(2) * max(H, W))
(or, with `circle=True`, cropped to its central square and assumed zero outside the inscribed
circle), rotated about that square's centre pixel by bilinear interpolation with zeros outside,
and summed along its columns. One detector bin per pixel column; the sinogram is
(detectors, angles), angles in degrees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def detector_count(height: int, width: int, circle: bool) -> int:
    if circle:
        return min(height, width)
    return int(math.ceil(math.sqrt(2) * max(height, width)))


class ParallelBeamProjector:
    """Projects (H, W) images, or (B, H, W) batches, to (detectors, angles) sinograms."""

    def __init__(self, height: int, width: int, angles_degrees, circle: bool = False):
        angles = torch.as_tensor(angles_degrees, dtype=torch.float64).reshape(-1)
        if angles.numel() == 0:
            raise ValueError("a projector needs at least one angle")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height} x {width}")
        self.height, self.width, self.circle = height, width, circle
        self.angles_degrees = angles
        size = detector_count(height, width, circle)
        self.detectors = size
        # Image pixel index = square index - offset. skimage pads by ceil of the missing length and
        # puts the old centre s // 2 at the new centre (s + pad) // 2; with `circle` it crops the
        # central square, starting at ceil(excess / 2).
        if circle:
            offset_rows, offset_cols = (-int(math.ceil((s - size) / 2)) for s in (height, width))
        else:
            offset_rows, offset_cols = (size // 2 - s // 2 for s in (height, width))
        centre = size // 2
        radians = torch.deg2rad(angles)
        cos, sin = torch.cos(radians)[:, None, None], torch.sin(radians)[:, None, None]
        # Output sample (ray t, detector s) of the rotated square reads the square at
        # column c + cos s + sin t, row c - sin s + cos t (skimage's warp matrix).
        s = (torch.arange(size, dtype=torch.float64) - centre)[None, None, :]
        t = (torch.arange(size, dtype=torch.float64) - centre)[None, :, None]
        columns = centre + cos * s + sin * t - offset_cols
        rows = centre - sin * s + cos * t - offset_rows
        # grid_sample with align_corners=True maps -1 and 1 to the first and last pixel centres.
        grid_x = columns * (2.0 / max(width - 1, 1)) - 1.0
        grid_y = rows * (2.0 / max(height - 1, 1)) - 1.0
        # (angles, rays, detectors, 2); float32 keeps a 512^2, 100-angle grid at about 0.4 GB.
        self.grid = torch.stack([grid_x, grid_y], dim=-1).float()

    def to(self, device: torch.device) -> "ParallelBeamProjector":
        self.grid = self.grid.to(device)
        return self

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        batched = image.dim() == 3
        images = image if batched else image[None]
        if images.shape[-2:] != (self.height, self.width):
            raise ValueError(f"projector built for {self.height} x {self.width} images, got {tuple(images.shape[-2:])}")
        angles = self.grid.shape[0]
        sinograms = []
        for single in images:
            # Each angle samples the same image, so expand (no copy) it along the angle batch.
            source = single[None, None].expand(angles, 1, self.height, self.width).to(self.grid.dtype)
            rotated = F.grid_sample(source, self.grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            # Sum over rays (dim 2): (angles, detectors) -> (detectors, angles).
            sinograms.append(rotated[:, 0].sum(dim=1).transpose(0, 1))
        stacked = torch.stack(sinograms)
        return stacked if batched else stacked[0]
