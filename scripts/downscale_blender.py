"""Downscale a nerf_synthetic-format scene (transforms_{train,val,test}.json + RGBA PNGs), e.g. for CPU runs.

    python scripts/downscale_blender.py nerf_synthetic/lego data/lego-100 --size 100

Pixels are box-filtered in premultiplied alpha, so silhouettes keep fractional coverage without dark
fringes (averaging straight-alpha colour would mix the transparent pixels' arbitrary colour in). The
focal length follows from `camera_angle_x`, so the JSON files are copied unchanged apart from the
frames kept. A scene shipped with its training split alone can give up its last views as validation
and test views: `--holdout VAL TEST` (taken from the end of train, in file order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")


def downscale_rgba(path: Path, size: int) -> np.ndarray:
    """An RGBA image box-filtered to size x size in premultiplied alpha, back to straight alpha, uint8."""
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    height, width = rgba.shape[:2]
    if height % size or width % size or height != width:
        raise SystemExit(f"error: {path}: {width}x{height} is not a square multiple of {size}")
    factor = height // size
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    pooled = premultiplied.reshape(size, factor, size, factor, 4).mean(axis=(1, 3))
    alpha = pooled[..., 3:]
    colour = np.where(alpha > 0, pooled[..., :3] / np.maximum(alpha, 1e-12), 0.0)
    return np.round(np.concatenate([colour, alpha], axis=-1).clip(0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="scene folder holding transforms_train.json")
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", type=int, default=100, help="output width and height (default 100)")
    parser.add_argument("--holdout", type=int, nargs=2, metavar=("VAL", "TEST"),
                        help="take this many val and test views from the end of train (for a train-only scene)")
    args = parser.parse_args(argv)

    metas = {}
    for split in SPLITS:
        path = args.source / f"transforms_{split}.json"
        if path.is_file():
            metas[split] = json.loads(path.read_text())
    if "train" not in metas:
        print(f"error: {args.source / 'transforms_train.json'}: missing", file=sys.stderr)
        return 2
    sources = {split: [(args.source, frame) for frame in meta["frames"]] for split, meta in metas.items()}
    if args.holdout:
        val_count, test_count = args.holdout
        train = sources["train"]
        if val_count + test_count >= len(train):
            print(f"error: --holdout {val_count} {test_count} leaves no training view of {len(train)}", file=sys.stderr)
            return 2
        sources["test"] = train[len(train) - test_count:]
        sources["val"] = train[len(train) - test_count - val_count:len(train) - test_count]
        sources["train"] = train[: len(train) - test_count - val_count]
    for split, frames in sources.items():
        (args.output / split).mkdir(parents=True, exist_ok=True)
        written = []
        for index, (root, frame) in enumerate(frames):
            image = downscale_rgba(root / (frame["file_path"].replace("./", "") + ".png"), args.size)
            Image.fromarray(image, mode="RGBA").save(args.output / split / f"r_{index}.png")
            written.append({**frame, "file_path": f"./{split}/r_{index}"})
        meta = {**metas.get(split, metas["train"]), "frames": written}
        (args.output / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
        print(f"{split}: {len(written)} views of {args.size}x{args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
