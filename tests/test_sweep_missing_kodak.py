"""README's GPU-window smoke command in a fresh clone, before Kodak is fetched: one line that says
what to run first, not only that the photo is missing."""

from __future__ import annotations

from pathlib import Path

from bn_nerf import cli

GPU_WINDOW = Path(__file__).resolve().parents[1] / "configs" / "table1" / "gpu-window.yaml"


def test_missing_kodak_photo_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/kodak here, as in a fresh clone
    assert cli.main(["sweep", str(GPU_WINDOW), "--engine", "local", "--smoke", "--out", str(tmp_path / "window")]) == 2
    error = capsys.readouterr().err
    assert "data/kodak/kodim01.png: no such file or folder" in error
    assert "fetch Kodak first with `python scripts/fetch_kodak.py data/kodak --photos 1` (needs the internet)" in error
    assert not (tmp_path / "window").exists()


def test_other_missing_inputs_get_no_fetch_advice(tmp_path, monkeypatch, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("methods: [relu]\nseeds: [0]\ntasks:\n  image:\n    inputs: [photos/missing.png]\n"
                      "    sizes: [2x8]\n    iterations: 1\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", str(config), "--engine", "local", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "photos/missing.png: no such file or folder" in error and "fetch" not in error
