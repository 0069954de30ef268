"""Images as nerfstudio's dataset will read them, for every format's check: each decoded completely
(a truncated file fails only there, not at its header), in a thread pool (Pillow decodes without the
GIL), and once per process: a decoded file is remembered by its path, size and modification time,
so the check ns-train makes before it writes a run folder (bn_nerf.nerf.engine.trainer) and the
parser's own reading of each split afterwards decode each image once between them.

Also the downscaled copies a capture is read at (images_N/, `--downscale-factor N`): where one is
missing it is made here with Pillow, since nerfstudio's parsers would call ffmpeg, which may be
absent, or stop to ask.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from PIL import Image

from nerfstudio.data.dataparsers.nerfstudio_dataparser import MAX_AUTO_RESOLUTION
from nerfstudio.utils.rich_utils import CONSOLE

from bn_nerf.io.errors import InputError
from bn_nerf.runtime import usable_cores

# nerfstudio's dataset turns an image into 8-bit (H, W, 3 or 4) with numpy; these modes are the
# ones that come out as colour (grayscale is repeated to RGB). It refuses two-channel images with
# an assert and reads a palette image's indices as gray levels.
READABLE_MODES = ("L", "RGB", "RGBA")


# A mask (nerfstudio reads it as a boolean array, so one channel of any depth).
MASK_MODES = ("1", "L")


@dataclass(frozen=True)
class DecodedImage:
    size: tuple[int, int]
    """(width, height) in pixels"""
    mode: str
    """Pillow's mode"""
    transparent: bool
    """an alpha channel with at least one pixel less than opaque"""


def decode_all(paths: Sequence[Path], modes: Sequence[str] = READABLE_MODES) -> list[DecodedImage]:
    """Decode every image, in order; the first bad one (in that order), or the first in a mode
    other than `modes`, raises InputError."""
    with ThreadPoolExecutor(max(1, min(usable_cores(), len(paths)))) as pool:
        # map() yields in order, so the error reported is that of the first bad image.
        images = list(pool.map(_decode_current, paths))
    for path, image in zip(paths, images):
        if image.mode not in modes:
            kinds = "8-bit grayscale, RGB or RGBA" if modes == READABLE_MODES else "a one-channel mask"
            raise InputError(f"{path}: a {image.mode} image; nerfstudio reads {kinds}")
    return images


def _decode_current(image_path: Path) -> DecodedImage:
    status = image_path.stat()
    return _decode(image_path, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _decode(image_path: Path, byte_size: int, modified_ns: int) -> DecodedImage:
    """Keyed on the file's size and modification time too, so a file replaced since is decoded
    again; an error is not cached."""
    try:
        with Image.open(image_path) as image:
            image.load()
            mode, size = image.mode, image.size
            transparent = mode == "RGBA" and image.getextrema()[3][0] < 255
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's kinds for damaged and unknown files
        raise InputError(f"{image_path}: unreadable image ({error})") from None
    return DecodedImage(size, mode, transparent)


def downscale_factor_to_read(
    originals: Sequence[Path], downscaled: Callable[[int], Sequence[Path]], data: Path, requested: Optional[int],
    max_auto_side: int = MAX_AUTO_RESOLUTION,
) -> int:
    """The factor a capture is read at: the one asked for; else, where full-size images are there,
    nerfstudio's rule with `max_auto_side` for its 1600 pixels (the smallest power of two that brings
    the first one's longer side to that or fewer); else, of the downscaled sets present in full
    (LLFF's folders often hold images_8/ alone), the one of the largest images within that side, or of
    the smallest images where none is. `downscaled(N)` names the copies at factor N."""
    if requested is not None:
        if requested < 1:
            raise InputError(f"--downscale-factor must be a positive integer; got {requested}")
        return requested
    existing = next((path for path in originals if path.is_file()), None)
    if existing is not None:
        longer_side = max(_decode_current(existing).size)
        factor = 1
        while longer_side / factor > max_auto_side:
            factor *= 2
        return factor
    present = []
    for folder in data.glob("images_*"):
        factor = folder.name.removeprefix("images_")
        if factor.isdigit() and all(path.is_file() for path in downscaled(int(factor))):
            present.append(int(factor))
    if not present:
        first = originals[0] if originals else data / "images"
        raise InputError(f"{first}: missing, and no images_N/ folder holds every image downscaled")
    within = [factor for factor in present if max(_decode_current(downscaled(factor)[0]).size) <= max_auto_side]
    return min(within) if within else max(present)


def images_to_read(originals: Sequence[Path], downscaled: Callable[[int], Sequence[Path]], factor: int,
                   missing_original: Callable[[int, Path], str]) -> list[Path]:
    """The images a capture is read from at `factor`: its originals, each required to exist
    (`missing_original(index, path)` is the error line for one that does not), or their images_N
    copies, made with Pillow where missing."""
    if factor == 1:
        for index, path in enumerate(originals):
            if not path.is_file():
                raise InputError(missing_original(index, path))
        return list(originals)
    copies = list(downscaled(factor))
    make_missing_downscaled(originals, copies, factor)
    return copies


def make_missing_downscaled(originals: Sequence[Path], copies: Sequence[Path], factor: int, masks: bool = False) -> None:
    """Write each missing copy as its original shrunk `factor` times (each side rounded down, as
    nerfstudio rescales the cameras), with Pillow's area filter (masks: nearest, to stay binary)."""
    missing = [(original, copy) for original, copy in zip(originals, copies) if not copy.is_file()]
    if not missing:
        return
    for original, copy in missing:
        if not original.is_file():
            raise InputError(f"{copy}: missing, and so is {original} to make it from")
    with ThreadPoolExecutor(max(1, min(usable_cores(), len(missing)))) as pool:
        list(pool.map(lambda pair: _write_downscaled(*pair, factor, masks), missing))
    CONSOLE.print(f"made {len(missing)} images downscaled {factor}x under {missing[0][1].parent} with Pillow")


def _write_downscaled(original: Path, copy: Path, factor: int, mask: bool) -> None:
    try:
        with Image.open(original) as image:
            image.load()
            small = image.resize((image.width // factor, image.height // factor),
                                 Image.Resampling.NEAREST if mask else Image.Resampling.BOX)
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{original}: unreadable image ({error})") from None
    copy.parent.mkdir(parents=True, exist_ok=True)
    small.save(copy, **({"quality": 95} if copy.suffix.lower() in (".jpg", ".jpeg") else {}))
