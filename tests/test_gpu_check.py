"""scripts/gpu_check.py --smoke: the GPU readiness script, shrunk, on the CPU, so that it is never
found broken on the day a GPU is lent."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_smoke_runs_every_check_and_reports_its_backends(tmp_path, capsys):
    gpu_check = runpy.run_path(str(SCRIPT), run_name="gpu_check")
    assert gpu_check["main"](["--smoke", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {row["check"]: row for row in report["rows"]}
    grid_rows = ["bn-diner (BN)", "DINER (BN off)", "bn-nerf occupancy (BN)", "NeRF occupancy (BN off)"]
    assert list(rows) == [*grid_rows, "bn-nerf hierarchical (BN)", "SyncBatchNorm"]
    for name in grid_rows:
        # No CUDA here: torch marches the rays (and runs DINER's table), and the report says so.
        assert rows[name]["rays_marched_by"] == "torch"
        assert rows[name]["steps"] == 3 and rows[name]["test_psnr"] > 5
    for name in grid_rows[:2]:
        assert rows[name]["table"] == "torch-dense"
    assert rows["bn-nerf hierarchical (BN)"]["steps"] == 2 and rows["bn-nerf hierarchical (BN)"]["test_psnr"] > 5
    assert rows["SyncBatchNorm"]["converted_layers"] == 3 and rows["SyncBatchNorm"]["keys_unchanged"]
    assert report["device"] == "CPU" and "tinycudann does not import" in report["tcnn"]
    printed = capsys.readouterr().out
    assert "check | steps | steps_per_s" in printed and "bn-diner (BN) | 3 |" in printed
