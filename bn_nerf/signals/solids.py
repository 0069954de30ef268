"""The two kinds of solid the occupancy task fits, both living in the unit cube [-0.5, 0.5]^3.

Each answers `inside(points)` (bool per point) and draws `surface_points(count, generator)`.

- `MeshSolid`: a triangle mesh labelled by its generalized winding number (w > 1/2 is inside).
  Labelling millions of points exactly is slow, so labels go coarse to fine: a cell grid of
  resolution r is labelled from the grid of r/2, and a point takes its cell's label unless the
  cell is *uncertain* -- within one cell of the surface, or next to a cell with the other label
  (where w crosses 1/2 away from the mesh, across a scan's holes) -- in which case its winding
  number is computed. Away from the surface w is smooth and, for closed meshes, constant, so
  a certain cell's centre speaks for all of it.
- `BumpySphere`: the embedded default, a star-shaped solid whose radius carries coarse lobes and
  fine ripples; inside and surface are analytic, so labels are exact at any resolution.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from bn_nerf.signals.winding import WindingNumber

# Grids coarser than this are labelled point by point.
BASE_RESOLUTION = 16
HALF_EXTENT = 0.5


def cell_centres(resolution: int) -> torch.Tensor:
    """(r^3, 3) centres of the r^3 cells of the unit cube, row-major (x slowest)."""
    axis = -HALF_EXTENT + (torch.arange(resolution, dtype=torch.float32) + 0.5) * (2 * HALF_EXTENT / resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def cell_index(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """Flat index of the cell holding each point (points outside fall in the nearest cell)."""
    ijk = ((points + HALF_EXTENT) * (resolution / (2 * HALF_EXTENT))).floor().long().clamp(0, resolution - 1)
    return (ijk[:, 0] * resolution + ijk[:, 1]) * resolution + ijk[:, 2]


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    return F.max_pool3d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0


class MeshSolid:
    def __init__(self, vertices: np.ndarray, faces: np.ndarray, name: str = "mesh"):
        self.name = name
        self.triangles = torch.as_tensor(np.asarray(vertices)[np.asarray(faces)], dtype=torch.float32)
        self.winding = WindingNumber(self.triangles)
        edges = self.triangles[:, 1:] - self.triangles[:, :1]
        self.areas = 0.5 * torch.linalg.cross(edges[:, 0], edges[:, 1], dim=-1).norm(dim=-1)
        # The finest cell grid used to label arbitrary points; the task sets it from its eval grid.
        self.label_resolution = 64
        self._levels: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def exact_inside(self, points: torch.Tensor) -> torch.Tensor:
        return self.winding(points) > 0.5

    def surface_points(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` points uniform over the surface area."""
        faces = torch.multinomial(self.areas, count, replacement=True, generator=generator)
        u, v = torch.rand(2, count, generator=generator)
        flip = u + v > 1  # fold the unit square onto the triangle
        u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
        corners = self.triangles[faces]
        return corners[:, 0] + u[:, None] * (corners[:, 1] - corners[:, 0]) + v[:, None] * (corners[:, 2] - corners[:, 0])

    def _level(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, uncertain) of the resolution^3 cells, each a flat bool tensor."""
        if resolution not in self._levels:
            centres = cell_centres(resolution)
            if resolution <= BASE_RESOLUTION:
                labels = self.exact_inside(centres)
            else:
                labels = self._inside_at(centres, resolution // 2)
            # Cells the surface passes through: from surface samples about a quarter cell apart,
            # plus every vertex (tiny triangles); dilated by one cell to cover the gaps.
            spacing = 2 * HALF_EXTENT / resolution / 4
            count = int(min(float(self.areas.sum()) / spacing ** 2 + 1, 20_000_000))
            samples = torch.cat([self.surface_points(count, torch.Generator().manual_seed(resolution)),
                                 self.triangles.reshape(-1, 3)])
            surface = torch.zeros(resolution ** 3, dtype=torch.bool)
            surface[cell_index(samples, resolution)] = True
            grid = labels.reshape((resolution,) * 3)
            mixed = _dilate(grid) & _dilate(~grid)
            uncertain = _dilate(surface.reshape((resolution,) * 3)) | mixed
            self._levels[resolution] = (labels, uncertain.reshape(-1))
        return self._levels[resolution]

    def _inside_at(self, points: torch.Tensor, resolution: int) -> torch.Tensor:
        labels, uncertain = self._level(resolution)
        cells = cell_index(points, resolution)
        result = labels[cells].clone()
        recompute = uncertain[cells]
        if recompute.any():
            result[recompute] = self.exact_inside(points[recompute])
        return result

    def inside(self, points: torch.Tensor) -> torch.Tensor:
        if self.label_resolution < 2 * BASE_RESOLUTION:
            return self.exact_inside(points)
        return self._inside_at(points, self.label_resolution)


class BumpySphere:
    """A sphere of radius 0.3 with six coarse lobes and fine ripples of about 1/40 of its size."""

    name = "bumpy_sphere"

    @staticmethod
    def radius(directions: torch.Tensor) -> torch.Tensor:
        x, y, z = directions.unbind(-1)
        azimuth, polar = torch.atan2(y, x), torch.acos(z.clamp(-1, 1))
        lobes = 0.06 * torch.sin(3 * azimuth) * torch.sin(2 * polar)
        ripples = 0.012 * torch.sin(37 * x) * torch.sin(41 * y) * torch.sin(43 * z)
        return 0.3 + lobes + ripples

    def inside(self, points: torch.Tensor) -> torch.Tensor:
        distance = points.norm(dim=-1)
        return distance <= self.radius(points / distance.clamp_min(1e-12)[:, None])

    def surface_points(self, count: int, generator: torch.Generator) -> torch.Tensor:
        directions = torch.randn(count, 3, generator=generator)
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return directions * self.radius(directions)[:, None]
