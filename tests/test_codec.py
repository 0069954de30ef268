"""The .bnr codec end to end: `bn-inr encode` then `bn-inr decode` on a real photo, bit-exact
against the folded, quantized network's own render; the real rate; bad files; a fresh process.

CPU only; one small photo fitted once (seconds) and shared by the tests.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from bn_nerf.cli import main
from bn_nerf.codec.compress import AUTO_BITS_PSNR_LOSS, encode_network, psnr_uint8
from bn_nerf.codec.decode import read_coded_image, render
from bn_nerf.tasks.encode import fine_tune_quantized
from bn_nerf.codec.format import FORMAT_VERSION, MAGIC
from bn_nerf.codec.quantize import dequantize, equalize_channel_ranges, quantization_step, quantize
from bn_nerf.networks import build_network, fold_normalization
from bn_nerf.tasks.image import ImageTask

HEIGHT, WIDTH = 40, 56
NET = ["--method", "bn+pe", "--depth", "3", "--width", "16"]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict:
    """One photo fitted and coded by the CLI, its run folder kept, and the encoder's report."""
    folder = tmp_path_factory.mktemp("codec")
    photo = resize(data.astronaut(), (HEIGHT, WIDTH), anti_aliasing=True)
    image = folder / "photo.png"
    iio.imwrite(image, np.round(photo * 255).astype(np.uint8))
    coded = folder / "photo.bnr"
    capture = folder / "report.txt"
    with capture.open("w") as handle, contextlib.redirect_stdout(handle):
        assert main(["encode", str(image), str(coded), *NET, "--iterations", "150", "--threads", "1", "--quiet",
                     "--run-dir", str(folder / "run")]) == 0
    return {"image": image, "file": coded, "run": folder / "run", "report": capture.read_text(), "folder": folder}


def decode_cli(source: Path, out: Path) -> int:
    return main(["decode", str(source), str(out)])


def test_decoding_the_file_gives_the_folded_quantized_networks_own_render_bit_for_bit(encoded, tmp_path):
    out = tmp_path / "decoded.png"
    assert decode_cli(encoded["file"], out) == 0
    decoded = iio.imread(out)
    # The network the fit kept, folded, range-equalized and quantized here by hand at the file's bit depth.
    saved = torch.load(encoded["run"] / "network.pt")
    net = build_network("bn+pe", 2, 3, 3, 16)
    net.load_state_dict(saved["network"])
    folded = fold_normalization(net)
    equalize_channel_ranges(folded)
    bits = read_coded_image(encoded["file"]).bits
    with torch.no_grad():
        for parameter in folded.parameters():
            step = quantization_step(parameter, bits)
            parameter.copy_(dequantize(quantize(parameter, step, bits), step, parameter.shape))
    expected = render(folded, HEIGHT, WIDTH)
    assert decoded.shape == (HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, expected)
    # Not a constant image: the fit learned something the quantization kept.
    assert decoded.std() > 20


def test_the_reported_rate_is_the_files_size(encoded):
    size = encoded["file"].stat().st_size
    match = re.search(r"(\d+) bytes \((\d+) header\), ([\d.]+) bpp", encoded["report"])
    assert match, encoded["report"]
    assert int(match[1]) == size
    assert float(match[3]) == pytest.approx(size * 8 / (HEIGHT * WIDTH), abs=1e-4)
    assert 0 < int(match[2]) < size


def test_the_file_is_within_three_percent_of_its_entropy_estimate(encoded):
    saved = torch.load(encoded["run"] / "network.pt")
    net = build_network("bn+pe", 2, 3, 3, 16)
    net.load_state_dict(saved["network"])
    target = iio.imread(encoded["image"]).astype(np.float32) / 255.0
    for bits in (6, 10):
        result = encode_network(fold_normalization(net), target, bits=bits)
        estimate = result.entropy_estimates()["entropy_estimate_bytes"]
        assert abs(len(result.data) / estimate - 1) <= 0.03, (bits, len(result.data), estimate)


def test_a_file_decodes_to_the_same_png_in_fresh_processes_at_one_and_two_threads(encoded, tmp_path):
    reference = tmp_path / "in_process.png"
    assert decode_cli(encoded["file"], reference) == 0
    for threads in (1, 2):
        out = tmp_path / f"fresh_{threads}.png"
        script = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from bn_nerf.cli import main; "
                  "code = main(['decode', sys.argv[2], sys.argv[3]]); "
                  "print('training code loaded:', 'bn_nerf.tasks.trainer' in sys.modules); sys.exit(code)")
        result = subprocess.run([sys.executable, "-c", script, str(threads), str(encoded["file"]), str(out)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "training code loaded: False" in result.stdout
        assert out.read_bytes() == reference.read_bytes()


def _bad_files(good: bytes) -> dict[str, tuple[bytes, str]]:
    corrupted = bytearray(good)
    corrupted[len(good) // 2] ^= 0x01
    newer = bytearray(good)
    newer[len(MAGIC)] = FORMAT_VERSION + 1
    return {
        "empty": (b"", "empty file"),
        "truncated": (good[: len(good) - 10], "truncated"),
        "header_cut": (good[:12], "truncated"),
        "wrong_magic": (b"\x89PNG" + good[4:], "wrong magic"),
        "unknown_version": (bytes(newer), f"unknown format version {FORMAT_VERSION + 1}"),
        "checksum": (bytes(corrupted), "checksum mismatch"),
    }


@pytest.mark.parametrize("case", ["empty", "truncated", "header_cut", "wrong_magic", "unknown_version", "checksum"])
def test_a_bad_file_is_one_line_naming_file_and_problem_exit_2_and_no_png(encoded, tmp_path, capsys, case):
    content, problem = _bad_files(encoded["file"].read_bytes())[case]
    bad = tmp_path / f"{case}.bnr"
    bad.write_bytes(content)
    out = tmp_path / "out.png"
    assert decode_cli(bad, out) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith(f"bn-inr decode: error: {bad}: "), error
    assert problem in error
    assert not any(tmp_path.glob("out.png*"))


def test_an_impossible_target_rate_and_an_uncodable_method_are_refused_before_training(encoded, tmp_path, capsys):
    # 100,000 iterations would take minutes: a prompt refusal shows that no training ran.
    for flags, problem in ((["--target-bpp", "0.05", *NET], "header alone takes"),
                           (["--method", "ln+pe", "--depth", "3", "--width", "16"], "cannot be coded")):
        out = tmp_path / "never.bnr"
        assert main(["encode", str(encoded["image"]), str(out), "--iterations", "100000", "--threads", "1",
                     "--quiet", *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and problem in error, error
        assert not any(tmp_path.iterdir())


def test_a_rate_target_with_quantization_aware_fine_tuning_fits_and_decodes(encoded, tmp_path):
    target_bpp = 4.0
    out = tmp_path / "target.bnr"
    assert main(["encode", str(encoded["image"]), str(out), *NET, "--iterations", "60", "--threads", "1", "--quiet",
                 "--target-bpp", str(target_bpp), "--qat-steps", "20"]) == 0
    assert out.stat().st_size * 8 / (HEIGHT * WIDTH) <= target_bpp
    assert decode_cli(out, tmp_path / "target.png") == 0


def test_quantization_aware_fine_tuning_improves_a_coarsely_quantized_network(encoded):
    saved = torch.load(encoded["run"] / "network.pt")
    net = build_network("bn+pe", 2, 3, 3, 16)
    net.load_state_dict(saved["network"])
    target = iio.imread(encoded["image"]).astype(np.float32) / 255.0
    folded = fold_normalization(net)
    plain = encode_network(folded, target, bits=4)
    fine_tune_quantized(folded, ImageTask(target), bits=4, steps=60, seed=0)
    tuned = encode_network(folded, target, bits=4)
    # At 4 bits the grid costs decibels; fine-tuning on it wins back a measurable part.
    assert plain.psnr < plain.psnr_unquantized - 0.3
    assert tuned.psnr > plain.psnr + 0.1, (plain.psnr, tuned.psnr)


def test_a_grayscale_photo_round_trips_as_one_channel(tmp_path):
    gray = resize(data.camera(), (24, 32), anti_aliasing=True)
    image = tmp_path / "gray.png"
    iio.imwrite(image, np.round(gray * 255).astype(np.uint8))
    coded, out = tmp_path / "gray.bnr", tmp_path / "gray_decoded.png"
    assert main(["encode", str(image), str(coded), *NET, "--iterations", "30", "--threads", "1", "--quiet"]) == 0
    assert read_coded_image(coded).channels == 1
    assert decode_cli(coded, out) == 0
    assert iio.imread(out).shape == (24, 32)


def test_an_output_in_a_missing_folder_is_refused_before_any_work(encoded, tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    assert main(["encode", str(encoded["image"]), str(missing / "x.bnr"), *NET, "--iterations", "100000",
                 "--threads", "1", "--quiet"]) == 2
    assert decode_cli(encoded["file"], missing / "x.png") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("no such folder" in line for line in errors), errors


def _folded_bn_net_with_one_quiet_channel() -> torch.nn.Module:
    """A BN 3x16 net whose BN statistics give one channel a tiny variance, so that folding makes one
    input column of the next Linear far larger than the rest (what trained BN nets do)."""
    torch.manual_seed(0)
    net = build_network("bn", 2, 3, 3, 16)
    with torch.no_grad():
        for norm in net.norms:
            norm.running_var.uniform_(0.5, 2.0)
            norm.running_var[3] = 1e-5
    return fold_normalization(net.eval())


def test_range_equalization_keeps_the_function_balances_columns_and_is_a_fixed_point():
    folded = _folded_bn_net_with_one_quiet_channel()
    coordinates = torch.rand(512, 2) * 2 - 1
    before = folded(coordinates)

    def column_spread(net) -> float:
        return max(float(layer.weight.abs().amax(0).max() / layer.weight.abs().amax(0).min()) for layer in net.linears[1:])

    spread_before = column_spread(folded)
    equalize_channel_ranges(folded)
    assert torch.allclose(folded(coordinates), before, rtol=1e-5, atol=1e-5)
    assert column_spread(folded) < spread_before / 10
    weights = [parameter.clone() for parameter in folded.parameters()]
    equalize_channel_ranges(folded)
    assert all(torch.equal(a, b) for a, b in zip(weights, folded.parameters()))


def _folded_fit(encoded) -> torch.nn.Module:
    """The fixture's fitted network, BatchNorm folded: what `bn-inr encode` quantizes."""
    saved = torch.load(encoded["run"] / "network.pt")
    net = build_network("bn+pe", 2, 3, 3, 16)
    net.load_state_dict(saved["network"])
    return fold_normalization(net)


def _photo(encoded) -> np.ndarray:
    return iio.imread(encoded["image"]).astype(np.float32) / 255.0


def test_a_non_square_photo_decodes_upright_as_the_network_renders_it_and_close_to_the_original(encoded, tmp_path):
    """The fixture's photo is 40 high and 56 wide. A decoder that swapped height and width in its
    pixel grid would still write a 40x56 PNG, and the encoder, measuring through the same render,
    would report the scrambled image's PSNR; so the decoded pixels are checked against the image
    task's render of the fitted network (its training grid, no codec code) and against the photo.
    Measured: 34.7 dB to the render and 16.6 dB to the photo (the fit's own 16.7 dB); with the grid
    transposed, 11.0 and 10.0 dB."""
    out = tmp_path / "decoded.png"
    assert decode_cli(encoded["file"], out) == 0
    decoded = iio.imread(out)
    assert decoded.shape == (HEIGHT, WIDTH, 3)
    photo = _photo(encoded)
    with torch.no_grad():
        fitted_render = ImageTask(photo).reconstruct(_folded_fit(encoded)).clamp(0, 1).numpy()
    # Only quantization separates the two: far closer to each other than either is to the photo.
    assert psnr_uint8(decoded, fitted_render) > 25.0
    fit_psnr = json.loads((encoded["run"] / "metrics.json").read_text())["psnr"]
    assert psnr_uint8(decoded, photo) > fit_psnr - 0.5, fit_psnr


def test_auto_bits_are_the_fewest_whose_decoded_image_is_within_the_allowed_loss(encoded, tmp_path):
    """The fixture's file was coded with no --bits: its depth must meet the rule (decoded PSNR within
    AUTO_BITS_PSNR_LOSS of the unquantized network's) and one bit fewer must not. Measured: 7 bits,
    0.08 dB below the unquantized network; 6 bits, 0.26 dB below."""
    folded, photo = _folded_fit(encoded), _photo(encoded)
    chosen = read_coded_image(encoded["file"]).bits
    out = tmp_path / "decoded.png"
    assert decode_cli(encoded["file"], out) == 0
    unquantized = encode_network(folded, photo, bits=chosen).psnr_unquantized
    assert psnr_uint8(iio.imread(out), photo) >= unquantized - AUTO_BITS_PSNR_LOSS, chosen
    one_bit_fewer = encode_network(folded, photo, bits=chosen - 1)
    assert one_bit_fewer.psnr < unquantized - AUTO_BITS_PSNR_LOSS, chosen


def test_eight_bits_per_weight_cost_the_decoded_image_under_a_tenth_of_a_decibel(encoded, tmp_path):
    """Each tensor's step spans its whole range at the bit depth's levels: 8 bits leave the fixture's
    decoded photo 0.03 dB below the unquantized network (a step sized to half the range, clipping
    every large weight, left it 7.6 dB below)."""
    folded, photo = _folded_fit(encoded), _photo(encoded)
    result = encode_network(folded, photo, bits=8)
    coded, out = tmp_path / "eight_bits.bnr", tmp_path / "eight_bits.png"
    coded.write_bytes(result.data)
    assert decode_cli(coded, out) == 0
    assert psnr_uint8(iio.imread(out), photo) >= result.psnr_unquantized - 0.1
