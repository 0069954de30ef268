"""`bn-inr encode`'s default net size: chosen from the image's pixel count so that a default file
lands near DEFAULT_BITS_PER_PIXEL (on a small photo, just under JPEG's smallest file), and never
chosen where --depth/--width, --config or --target-bpp say otherwise. And the JPEG it is compared
with: the lowest quality that reaches a PSNR."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from bn_nerf import cli
from bn_nerf.codec.compress import decoder_config
from bn_nerf.codec.decode import IN_DIM, read_coded_image
from bn_nerf.codec.jpeg import jpeg_at_psnr, jpeg_point
from bn_nerf.codec.sizing import (DEFAULT_BITS_PER_PIXEL, SHARE_OF_SMALLEST_JPEG, default_bits_per_pixel,
                                  default_network_size, estimated_file_bits)
from bn_nerf.io.images import load_image, save_image
from bn_nerf.networks import build_from_config, method_config, stored_value_count

METHOD = "bn+pe"
CONFIG = method_config(METHOD)


def stored_weights(depth: int, width: int) -> int:
    return stored_value_count(build_from_config(decoder_config(CONFIG), IN_DIM, 3, depth, width))


def photo(height: int, width: int) -> np.ndarray:
    return np.clip(resize(data.astronaut() / 255.0, (height, width), anti_aliasing=True), 0, 1).astype(np.float32)


def test_default_size_grows_with_the_pixel_count_and_lands_near_the_rate():
    shapes = [(128, 128), (256, 256), (256, 384), (512, 768), (1024, 1536)]
    sizes = [default_network_size(CONFIG, METHOD, 3, height, width) for height, width in shapes]
    weights = [stored_weights(*size) for size in sizes]
    assert weights == sorted(weights) and len(set(weights)) == len(weights), sizes
    for (height, width), size in zip(shapes, sizes):
        rate = estimated_file_bits(CONFIG, METHOD, 3, height, width, *size) / (height * width)
        assert 0.8 * DEFAULT_BITS_PER_PIXEL <= rate <= DEFAULT_BITS_PER_PIXEL, (height, width, size, rate)
    # Half-size Kodak gets the net whose files beat JPEG there (BENCHMARKS.md "Image codec"), and
    # no default is the paper's 768x512 net on a photo of a sixth of its pixels.
    assert sizes[2] == (5, 20)
    assert stored_weights(*sizes[0]) < stored_weights(10, 28) / 10


def test_a_small_photo_aims_just_under_jpegs_smallest_file_and_a_large_one_at_the_default_rate():
    small, large = photo(128, 128), photo(512, 768)
    smallest_jpeg_bpp = jpeg_point(small, 1)[1] * 8 / (128 * 128)
    assert SHARE_OF_SMALLEST_JPEG * smallest_jpeg_bpp > DEFAULT_BITS_PER_PIXEL  # JPEG's fixed cost dominates
    assert default_bits_per_pixel(small) == pytest.approx(SHARE_OF_SMALLEST_JPEG * smallest_jpeg_bpp)
    assert default_bits_per_pixel(large) == DEFAULT_BITS_PER_PIXEL


def test_a_given_depth_or_width_is_kept_and_only_the_other_chosen():
    depth, width = default_network_size(CONFIG, METHOD, 3, 512, 768, depth=3)
    assert depth == 3 and width > default_network_size(CONFIG, METHOD, 3, 512, 768)[1]  # shallower, so wider
    assert default_network_size(CONFIG, METHOD, 3, 512, 768, hidden_width=20)[1] == 20
    larger = default_network_size(CONFIG, METHOD, 3, 512, 768, bits_per_pixel=4 * DEFAULT_BITS_PER_PIXEL)
    assert stored_weights(*larger) > 3 * stored_weights(*default_network_size(CONFIG, METHOD, 3, 512, 768))


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    save_image(path, photo(64, 96))
    return path


def encoded_size(photo_file, out, *options: str) -> tuple[int, int]:
    assert cli.main(["encode", str(photo_file), str(out), "--iterations", "2", "--threads", "1", "--quiet",
                     *options]) == 0
    coded = read_coded_image(out)
    return coded.depth, coded.hidden_width


def test_encode_sizes_the_net_for_the_photo_unless_told(photo_file, tmp_path, capsys):
    rate = default_bits_per_pixel(load_image(photo_file))
    assert encoded_size(photo_file, tmp_path / "default.bnr") == default_network_size(CONFIG, METHOD, 3, 64, 96, rate)
    printed = capsys.readouterr().out
    assert f"sized for a file of about {rate:.2f} bpp at 96x64" in printed and "JPEG (Pillow)" in printed
    assert encoded_size(photo_file, tmp_path / "flags.bnr", "--depth", "3", "--width", "9") == (3, 9)
    config = tmp_path / "size.json"
    config.write_text(json.dumps({"depth": 4, "width": 6}))
    assert encoded_size(photo_file, tmp_path / "config.bnr", "--config", str(config)) == (4, 6)
    assert "sized for" not in capsys.readouterr().out
    assert encoded_size(photo_file, tmp_path / "depth.bnr", "--depth", "3") == \
        default_network_size(CONFIG, METHOD, 3, 64, 96, rate, depth=3)
    assert encoded_size(photo_file, tmp_path / "rate.bnr", "--target-bpp", "2") == \
        default_network_size(CONFIG, METHOD, 3, 64, 96, bits_per_pixel=2)


def test_jpeg_at_psnr_is_the_lowest_quality_that_reaches_it():
    target = photo(48, 64)
    quality, size, psnr = jpeg_at_psnr(target, 28.0)
    assert psnr >= 28.0 and 1 < quality < 95
    assert jpeg_point(target, quality) == (quality, size, psnr)
    assert jpeg_point(target, quality - 1)[2] < 28.0  # one quality lower falls short
    assert jpeg_at_psnr(target, 0.0)[0] == 1
    assert jpeg_at_psnr(target, 99.0)[0] == 95  # out of JPEG's reach: its quality-95 file
