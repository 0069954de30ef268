"""Loading triangle meshes (OBJ, PLY, OFF, STL, ... via trimesh) with one-line errors, and
placing them in the occupancy task's unit cube.

trimesh refuses a truncated binary PLY or GLB, but loads what is left of a truncated OBJ, OFF or
ASCII PLY as a smaller mesh, and reads a truncated binary STL as an empty ASCII one. So a loaded mesh
is held to what its file declares: the vertex and face counts of an OFF or PLY header, the triangle
count of a binary STL, the closing `endsolid` of an ASCII STL; an OBJ, which declares nothing, must
not end in the middle of a statement (one cut exactly at a line's end is a smaller, valid OBJ).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import require_file

# The formats a folder of meshes is read for; trimesh reads these and more, named one by one.
MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")

# The mesh's longest side spans this share of the unit cube, leaving a margin so that the surface
# never touches the grid's boundary (marching cubes then closes it) and near-surface samples stay inside.
FILL = 0.9


def load_mesh(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64) of a mesh file, every part merged."""
    import trimesh

    path = require_file(path)
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many kinds for unreadable or unknown files
        raise InputError(f"{path}: not a readable mesh ({type(error).__name__}: {error})") from None
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    cut_short = _truncation(path, len(vertices), len(faces))
    if cut_short:
        raise InputError(f"{path}: {cut_short}; the file looks truncated")
    if len(faces) == 0 or len(vertices) == 0:
        raise InputError(f"{path}: mesh has no triangles")
    if not np.isfinite(vertices).all():
        raise InputError(f"{path}: vertex coordinates are not all finite")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(f"{path}: faces refer to missing vertices")
    return vertices, faces


def _truncation(path: Path, vertices: int, faces: int) -> str | None:
    """How the file falls short of what it declares, or None."""
    suffix = path.suffix.lower()
    if suffix == ".obj":
        return _unfinished_obj_statement(path)
    if suffix == ".stl":
        return _short_stl(path)
    declared = _off_counts(path) if suffix == ".off" else _ply_counts(path) if suffix == ".ply" else None
    # A polygon is split into several triangles, so a complete file gives at least the declared faces.
    if declared and (vertices < declared[0] or faces < declared[1]):
        return (f"holds {vertices} vertices and {faces} triangles, short of the {declared[0]} vertices and "
                f"{declared[1]} faces its header declares")
    return None


# What an OBJ statement must hold to be whole: keyword -> (fewest values, the form of one value).
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_INDEX = r"-?\d+"
_OBJ_STATEMENTS = {
    "v": (3, _NUMBER),
    "vn": (3, _NUMBER),
    "vt": (1, _NUMBER),
    # a, a/b, a//c or a/b/c
    "f": (3, rf"{_INDEX}(/{_INDEX})?(/{_INDEX})?|{_INDEX}//{_INDEX}"),
    "l": (2, rf"{_INDEX}(/{_INDEX})?"),
}


def _unfinished_obj_statement(path: Path) -> str | None:
    """The last statement of a file that ends without a line break, when it lacks values or ends in
    a partial one ('f 12/3 14/' or 'v 0.5 1.0'); a complete one is taken as written."""
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - 512))
        tail = file.read()
    if not tail.strip() or tail.endswith((b"\n", b"\r")):
        return None
    last_line = tail.splitlines()[-1].decode("utf-8", errors="replace").strip()
    keyword, *values = last_line.split() or [""]
    if keyword not in _OBJ_STATEMENTS:
        return None
    fewest, form = _OBJ_STATEMENTS[keyword]
    if len(values) < fewest or not all(re.fullmatch(form, value) for value in values):
        return f"ends in the middle of a statement ('{last_line[:40]}')"
    return None


def _off_counts(path: Path) -> tuple[int, int] | None:
    """(vertices, faces) an OFF header declares: the keyword (COFF, NOFF, ...), then the counts."""
    tokens = []
    with path.open("rb") as file:
        for line in file:
            tokens += line.split(b"#")[0].split()
            if len(tokens) >= 3:
                break
    if not tokens or not tokens[0].endswith(b"OFF"):
        return None
    try:
        return int(tokens[1]), int(tokens[2])
    except (IndexError, ValueError):  # a binary OFF ('OFF BINARY') or no counts: nothing declared
        return None


def _ply_counts(path: Path) -> tuple[int, int] | None:
    """(vertices, faces) a PLY header declares in its 'element vertex N' and 'element face M' lines."""
    counts = {}
    with path.open("rb") as file:
        for line in file:
            words = line.split()
            if words[:1] == [b"end_header"]:
                break
            if len(words) == 3 and words[0] == b"element" and words[2].isdigit():
                counts[words[1]] = int(words[2])
    if b"vertex" not in counts or b"face" not in counts:
        return None
    return counts[b"vertex"], counts[b"face"]


def _short_stl(path: Path) -> str | None:
    """A binary STL is an 80-byte header, a triangle count and 50 bytes per triangle; an ASCII one
    (which begins with 'solid' and holds only text) closes with 'endsolid'."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(1024)
        file.seek(max(0, size - 512))
        tail = file.read()
    if head[:5].lower() == b"solid" and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        last_line = tail.rstrip().rsplit(b"\n", 1)[-1].strip()
        return None if last_line.lower().startswith(b"endsolid") else "ends before its closing 'endsolid'"
    if size < 84:
        return f"{size} bytes is shorter than a binary STL's 84-byte header"
    declared = int.from_bytes(head[80:84], "little")
    if size < 84 + 50 * declared:
        return f"holds {(size - 84) // 50} of the {declared} triangles its header declares"
    return None


def normalized_to_unit_cube(vertices: np.ndarray, source: Path | str) -> np.ndarray:
    """Vertices centred and scaled uniformly into [-0.5, 0.5]^3 (longest side FILL)."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    extent = high - low
    if extent.max() <= 0 or extent.min() <= 1e-9 * extent.max():
        raise InputError(f"{source}: mesh is flat (extent {extent.round(6).tolist()}); it encloses no volume")
    return (vertices - (low + high) / 2) * (FILL / extent.max())
