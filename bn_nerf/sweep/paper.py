"""The paper's Table 1 and the claims its text makes from it, as data the sweep's table checks.

Values from the paper's Table 1 (PSNR in dB; 3D shape: IoU). Claims quote Sec. 4.1-4.5; each is a
set of "method A beats method B at net size S" comparisons, and every claim holds on the paper's
own numbers (tests/test_sweep.py checks that, which also guards these figures against typos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bn_nerf.networks.presets import PAPER_METHODS

COLUMN_TITLES = {"siren": "SIREN", "relu": "ReLU", "bn": "BN", "mfn": "MFN", "wire": "WIRE", "pe": "PE", "bn+pe": "BN+PE"}


def _rows(**by_size: tuple[float, ...]) -> dict[tuple[int, int], dict[str, float]]:
    table = {}
    for name, values in by_size.items():
        depth, width = (int(part) for part in name.lstrip("s").split("x"))
        table[(depth, width)] = dict(zip(PAPER_METHODS, values))
    return table


# task -> (depth, width) -> method -> value; methods in PAPER_METHODS order (SIREN ReLU BN MFN WIRE PE BN+PE).
TABLE1: dict[str, dict[tuple[int, int], dict[str, float]]] = {
    "image": _rows(s5x20=(23.18, 21.21, 23.39, 22.03, 21.95, 22.10, 24.26),
                   s5x30=(24.57, 22.57, 24.39, 23.34, 23.10, 23.47, 25.54),
                   s10x28=(25.52, 23.25, 26.27, 25.25, 25.05, 24.63, 26.85),
                   s10x40=(28.32, 23.56, 27.95, 26.92, 27.34, 26.66, 28.71),
                   s13x49=(29.42, 24.33, 29.08, 28.14, 29.02, 28.23, 30.84)),
    "ct": _rows(s2x128=(28.30, 26.31, 28.50, 24.82, 28.30, 28.16, 30.14),
                s2x256=(16.16, 26.78, 28.41, 27.97, 28.26, 28.11, 31.60),
                s4x128=(18.31, 28.21, 30.42, 29.15, 28.31, 30.42, 32.45),
                s4x256=(18.32, 28.30, 30.48, 30.92, 28.70, 30.00, 32.64),
                s8x256=(18.37, 29.93, 31.24, 31.18, 18.61, 30.79, 33.64)),
    "occupancy": _rows(s2x128=(0.954, 0.905, 0.952, 0.886, 0.956, 0.957, 0.983),
                       s2x256=(0.964, 0.904, 0.958, 0.972, 0.964, 0.968, 0.992)),
    "mri": _rows(s2x256=(26.04, 24.52, 28.97, 27.24, 25.31, 30.17, 32.42),
                 s4x256=(27.89, 26.11, 30.62, 29.74, 30.24, 32.12, 34.56)),
}

# The 5D NeRF row: Blender synthetic, mean of 8 scenes. Lower LPIPS is better.
NERF_COLUMNS = ("Plenoxels", "NeRF", "BN+NeRF", "DVGO", "DINER", "BN+DINER")
NERF_METRICS = ("psnr", "ssim", "lpips")
NERF_TABLE: dict[str, dict[str, float]] = {
    "psnr": dict(zip(NERF_COLUMNS, (30.99, 31.04, 31.37, 33.23, 33.11, 33.31))),
    "ssim": dict(zip(NERF_COLUMNS, (0.956, 0.953, 0.956, 0.966, 0.967, 0.968))),
    "lpips": dict(zip(NERF_COLUMNS, (0.050, 0.054, 0.050, 0.034, 0.034, 0.033))),
}


@dataclass(frozen=True)
class Claim:
    """Every method in `above` scores higher than every method in `below`, at every net size
    judged (or only at `sizes`), except the (method, size) pairs in `exceptions`."""

    text: str
    task: str
    above: tuple[str, ...]
    below: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...] | None = None
    exceptions: tuple[tuple[str, tuple[int, int]], ...] = ()

    def comparisons(self, sizes: Sequence[tuple[int, int]]) -> list[tuple[tuple[int, int], str, str]]:
        """(size, higher method, lower method) triples the claim asserts among `sizes`: the paper
        says "every size" of its own grid, which a sweep's grid stands in for."""
        judged = [size for size in sizes if self.sizes is None or size in self.sizes]
        return [(size, high, low) for size in judged for high in self.above for low in self.below
                if high != low and (high, size) not in self.exceptions and (low, size) not in self.exceptions]

def _others(*methods: str) -> tuple[str, ...]:
    return tuple(method for method in PAPER_METHODS if method not in methods)


CLAIMS: tuple[Claim, ...] = (
    Claim("ReLU is the worst method on every image size (Sec. 4.1)", "image", _others("relu"), ("relu",)),
    Claim("BN > ReLU on every image size (Sec. 4.1)", "image", ("bn",), ("relu",)),
    Claim("BN > PE, WIRE and MFN on every image size (Sec. 4.1)", "image", ("bn",), ("pe", "wire", "mfn")),
    Claim("BN > SIREN at 5x20 and 10x28 (Sec. 4.1)", "image", ("bn",), ("siren",), sizes=((5, 20), (10, 28))),
    Claim("BN+PE > PE on every image size (Sec. 4.1)", "image", ("bn+pe",), ("pe",)),
    Claim("BN+PE is the best method on every image size (Sec. 4.1)", "image", ("bn+pe",), _others("bn+pe")),
    Claim("BN+PE is the best method on every CT size (Sec. 4.2)", "ct", ("bn+pe",), _others("bn+pe")),
    # "BN surpasses all the other existing methods except MFN at 4x256"; the paper's own PE ties BN at 4x128.
    Claim("BN > SIREN, ReLU, MFN, WIRE and PE on every CT size, except MFN at 4x256 (Sec. 4.2)", "ct",
          ("bn",), _others("bn", "bn+pe"), exceptions=(("mfn", (4, 256)), ("pe", (4, 128)))),
    Claim("BN > ReLU on both 3D shape sizes (Sec. 4.3)", "occupancy", ("bn",), ("relu",)),
    Claim("BN+PE is the best method on both 3D shape sizes (Sec. 4.3)", "occupancy", ("bn+pe",), _others("bn+pe")),
    Claim("BN > ReLU on both MRI sizes (Sec. 4.4)", "mri", ("bn",), ("relu",)),
    Claim("BN > SIREN, MFN and WIRE on both MRI sizes (Sec. 4.4)", "mri", ("bn",), ("siren", "mfn", "wire")),
    Claim("BN+PE is the best method on both MRI sizes (Sec. 4.4)", "mri", ("bn+pe",), _others("bn+pe")),
)

# NeRF claims compare columns of the NeRF row by PSNR (Sec. 4.5).
NERF_CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("BN+NeRF > NeRF in PSNR (Sec. 4.5)", "BN+NeRF", "NeRF"),
    ("BN+DINER > DINER in PSNR (Sec. 4.5)", "BN+DINER", "DINER"),
)
