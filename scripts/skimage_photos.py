"""Write scikit-image's bundled colour photos as small square PNGs: a Kodak-like set of image
inputs for CPU-sized sweeps (configs/table1/cpu.yaml and protocol.yaml read data/photos64).

The photos ship inside scikit-image (nothing is downloaded); each is centre-cropped to a square
and shrunk with anti-aliasing to --side pixels.

    .venv/bin/python scripts/skimage_photos.py data/photos64 --side 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage import data
from skimage.transform import resize

from bn_nerf.io.images import save_image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def square_photo(name: str, side: int) -> np.ndarray:
    pixels = getattr(data, name)()[..., :3].astype(np.float32) / 255.0
    height, width = pixels.shape[:2]
    edge = min(height, width)
    top, left = (height - edge) // 2, (width - edge) // 2
    crop = pixels[top:top + edge, left:left + edge]
    return np.clip(resize(crop, (side, side), anti_aliasing=True), 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--side", type=int, default=64)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        save_image(args.out / f"{name}.png", square_photo(name, args.side))
    print(f"{len(PHOTOS)} photos of {args.side}x{args.side} -> {args.out}")


if __name__ == "__main__":
    main()
