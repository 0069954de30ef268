"""scripts/benchmark_codec.py --from-runs, on a tiny photo: it codes the networks `bn-inr image`
kept into the same files `bn-inr image` measured, records real bytes and decoded PSNR beside a
classical sweep, resumes without recoding, and keeps one protocol per folder."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from bn_nerf.cli import main
from bn_nerf.codec.compress import psnr_uint8
from bn_nerf.codec.decode import decode_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_codec.py"
METHODS = ("bn+pe", "pe")


def _benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def _points(out: Path) -> list[dict]:
    with (out / "points.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_benchmark_codes_kept_runs_as_bn_inr_image_measured_them_and_resumes(tmp_path):
    photo = tmp_path / "coffee.png"
    pixels = np.round(resize(data.coffee() / 255.0, (24, 32), anti_aliasing=True) * 255).astype(np.uint8)
    iio.imwrite(photo, pixels)
    runs = tmp_path / "runs"
    assert main(["image", "--image", str(photo), "--methods", *METHODS, "--sizes", "2x8",
                 "--iterations", "30", "--threads", "1", "--quiet", "--out", str(runs)]) == 0
    out = tmp_path / "benchmark"
    protocol = ["--downscale", "1", "--methods", *METHODS, "--sizes", "2x8", "--iterations", "30"]

    result = _benchmark(str(photo), *protocol, "--from-runs", str(runs), "--out", str(out))

    assert result.returncode == 0, result.stderr
    points = _points(out)
    classical = [p for p in points if not p["codec"].startswith("bnr:")]
    assert {p["codec"] for p in classical} == {"jpeg", "webp", "avif"}
    for method in METHODS:
        (point,) = [p for p in points if p["codec"] == f"bnr:{method}"]
        coded = out / "files" / f"coffee_{method}_2x8.bnr"
        # Real bytes, header included, and the PSNR of what a decoder gives back from that file.
        assert int(point["bytes"]) == coded.stat().st_size
        assert float(point["bpp"]) == int(point["bytes"]) * 8 / pixels[..., 0].size
        assert float(point["psnr"]) == psnr_uint8(decode_file(coded), pixels / 255.0)
        # The same kept network coded the same way: the rate and PSNR `bn-inr image` reported.
        measured = json.loads(next(runs.rglob(f"coffee/{method}_2x8/metrics.json")).read_text())
        assert int(point["bytes"]) == measured["file_bytes"]
        # (bn-inr image holds the photo in float32, the benchmark in float64: equal to 1e-6 dB)
        assert float(point["psnr"]) == pytest.approx(measured["psnr_file"], abs=1e-6)
        assert 0.97 < float(point["size_over_estimate"]) < 1.03
    assert (out / "summary.md").read_text().count("| bnr:") == len(METHODS)
    assert iio.imread(out / "rate_distortion.png").ndim == 3

    # A rerun codes nothing again; another protocol in the same folder is refused on one line.
    assert _benchmark(str(photo), *protocol, "--from-runs", str(runs), "--out", str(out)).returncode == 0
    assert _points(out) == points
    other = _benchmark(str(photo), *protocol[:-1], "31", "--from-runs", str(runs), "--out", tmp_path / "other")
    assert other.returncode != 0 and "trained 30 iterations, not --iterations 31" in other.stderr
    mixed = _benchmark(str(photo), *protocol[:-1], "31", "--from-runs", str(runs), "--out", str(out))
    assert mixed.returncode != 0 and "holds points of another protocol" in mixed.stderr
    assert _points(out) == points
