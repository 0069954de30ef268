"""Fetch the Kodak set (24 RGB photos, 768x512 or 512x768), the paper's image-task data, into DIR.

The photos stay out of the repository: nothing the tests or the main job read needs them, and at
15 MB they would outweigh the code. The default source is Rich Franzen's public copy of the set,
the one the image-compression literature cites; `--source` takes another base URL or a local
folder holding kodim01.png ... kodim24.png (a mirror, a USB copy), so a machine without internet
can be given them. Each photo is checked whole (decoded, RGB, Kodak's size) before it is kept, and
written under its final name only then, so an interrupted fetch leaves no half photo; a rerun
skips the photos already there and fetches the rest.

    .venv/bin/python scripts/fetch_kodak.py data/kodak
    .venv/bin/python scripts/fetch_kodak.py data/kodak --source /media/usb/kodak --photos 1 2 3 23
"""

from __future__ import annotations

import argparse
import io
import sys
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SOURCE = "http://r0k.us/graphics/kodak/kodak"
KODAK_SIZES = {(768, 512), (512, 768)}
DOWNLOAD_TIMEOUT_SECONDS = 60


def photo_name(number: int) -> str:
    return f"kodim{number:02d}.png"


def read_source(source: str, name: str) -> bytes:
    """The bytes of `name` under `source`: a base URL (scheme://...), or else a local folder."""
    if "://" not in source:
        return (Path(source) / name).read_bytes()
    with urllib.request.urlopen(f"{source.rstrip('/')}/{name}", timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        return response.read()


def checked_kodak_photo(payload: bytes, origin: str) -> None:
    """Refuse anything that is not a whole Kodak photo: a truncated download, an HTML error page,
    a resized or grayscale copy (some mirrors ship 256x256 grayscale versions under the same names)."""
    try:
        with Image.open(io.BytesIO(payload)) as image:
            image.load()
            mode, size = image.mode, image.size
            pixels = np.asarray(image)
    except Exception as error:  # Pillow raises many kinds for bytes that are not a whole image
        raise ValueError(f"{origin}: not a readable PNG ({type(error).__name__}: {error})") from None
    if mode != "RGB" or size not in KODAK_SIZES:
        raise ValueError(f"{origin}: a {size[0]}x{size[1]} {mode} image, not a Kodak photo (768x512 RGB)")
    if pixels.std() == 0:
        raise ValueError(f"{origin}: every pixel has the same value")


def fetch(out: Path, source: str, numbers: list[int]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for number in numbers:
        name = photo_name(number)
        target = out / name
        if target.is_file():
            try:
                checked_kodak_photo(target.read_bytes(), str(target))
                continue
            except ValueError:
                pass  # a bad copy from elsewhere: fetch it again
        origin = f"{source.rstrip('/')}/{name}"
        try:
            payload = read_source(source, name)
        except OSError as error:  # urllib's URLError and timeouts are OSErrors too
            print(f"fetch_kodak: error: {origin}: cannot read it ({error})", file=sys.stderr)
            failures += 1
            continue
        try:
            checked_kodak_photo(payload, origin)
        except ValueError as error:
            print(f"fetch_kodak: error: {error}", file=sys.stderr)
            failures += 1
            continue
        partial = target.with_name(f".{name}.partial")
        partial.write_bytes(payload)
        partial.replace(target)
        print(f"{name} -> {target}")
    kept = sum((out / photo_name(number)).is_file() for number in numbers)
    print(f"{kept} of {len(numbers)} Kodak photos in {out}" + (f"; {failures} failed" if failures else ""))
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write kodim01.png ... kodim24.png into")
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help=f"base URL or local folder holding the photos (default {DEFAULT_SOURCE})")
    parser.add_argument("--photos", type=int, nargs="+", default=list(range(1, 25)), metavar="N",
                        help="photo numbers, 1-24 (default: all)")
    args = parser.parse_args()
    bad = [number for number in args.photos if not 1 <= number <= 24]
    if bad:
        parser.error(f"--photos: Kodak has photos 1 to 24, not {bad[0]}")
    return fetch(args.out, args.source, args.photos)


if __name__ == "__main__":
    sys.exit(main())
