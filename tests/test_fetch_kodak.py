"""scripts/fetch_kodak.py from a local folder: whole Kodak-sized RGB photos are kept, anything else
(a grayscale 256x256 copy, a truncated file) is refused on one line and leaves nothing behind."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_kodak.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_fetch_keeps_kodak_photos_and_refuses_impostors(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (512, 768, 3), dtype=np.uint8)).save(source / "kodim01.png")
    Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(source / "kodim02.png")
    whole = (source / "kodim01.png").read_bytes()
    (source / "kodim03.png").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "kodak"

    result = _run(str(out), "--source", str(source), "--photos", "1", "2", "3", "4")

    assert result.returncode == 1
    assert sorted(path.name for path in out.iterdir()) == ["kodim01.png"]
    assert (out / "kodim01.png").read_bytes() == whole
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3
    assert "kodim02.png: a 256x256 L image, not a Kodak photo" in errors[0]
    assert "kodim03.png: not a readable PNG" in errors[1]
    assert "kodim04.png: cannot read it" in errors[2]
    assert "1 of 4 Kodak photos" in result.stdout

    rerun = _run(str(out), "--source", str(source), "--photos", "1")
    assert rerun.returncode == 0 and "kodim01.png ->" not in rerun.stdout  # kept, not fetched again
