"""`bn-inr sweep`: cells as Ray tasks and on the local engine, on tiny real runs; faults and bad input; the table.

One embedded Ray instance serves the module (starting one takes seconds); the driver-kill test
runs its own in a subprocess, as a user's sweep would.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from skimage import data
from skimage.transform import resize

from bn_nerf.cli import main
from bn_nerf.networks.presets import PAPER_METHODS
from bn_nerf.sweep.cells import ATTEMPTS_FILE, ERROR_FILE, execute, plan_cells
from bn_nerf.sweep.config import SMOKE_ITERATIONS, load_config, smoke_config
from bn_nerf.sweep.engine import start_ray
from bn_nerf.sweep.paper import CLAIMS, TABLE1
from bn_nerf.sweep.table import Results, judge
from bn_nerf.sweep.tasks import SWEEP_TASKS
from conftest import truncated

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    start_ray(None, cpus=2)
    yield
    ray.shutdown()


def photo(path: Path, name: str, side: int) -> Path:
    pixels = resize(getattr(data, name)() / 255.0, (side, side), anti_aliasing=True)
    iio.imwrite(path, np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    return path


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def read(folder: Path, name: str = "metrics.json") -> dict:
    return json.loads((folder / name).read_text())


def attempts(folder: Path) -> list[dict]:
    path = folder / ATTEMPTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def checkpoint_step(folder: Path) -> int:
    path = folder / "checkpoint.pt"
    return torch.load(path)["step"] if path.is_file() else 0


def sweep_killing_a_worker_once_it_checkpoints(arguments: list[str], folder: Path, join_seconds: float,
                                               kills: int = 1) -> list[int]:
    """Run `bn-inr sweep` in a thread, SIGKILL the worker of the cell in `folder` once it has written
    its checkpoint at iteration 20 -- and, up to `kills` in all, the worker of each rerun of the cell
    as soon as the rerun starts -- wait for the sweep to end, and return its exit codes."""
    codes = []
    sweep = threading.Thread(target=lambda: codes.append(main(arguments)))
    sweep.start()
    deadline = time.monotonic() + 60
    while checkpoint_step(folder) < 20:
        assert sweep.is_alive() and time.monotonic() < deadline, "the cell never checkpointed"
        time.sleep(0.02)
    os.kill(attempts(folder)[0]["pid"], signal.SIGKILL)
    for attempt in range(1, kills):
        deadline = time.monotonic() + 60
        while len(attempts(folder)) <= attempt:
            assert sweep.is_alive(), f"the sweep ended after {attempt} run(s) of the cell; {kills} were to be killed"
            assert time.monotonic() < deadline, f"run {attempt + 1} of the cell never started"
            time.sleep(0.02)
        os.kill(attempts(folder)[attempt]["pid"], signal.SIGKILL)
    sweep.join(timeout=join_seconds)
    return codes


def test_a_sweep_runs_each_cell_as_the_task_command_writes_the_table_and_skips_finished_cells(tmp_path, ray_instance, capsys):
    images = [photo(tmp_path / "camera.png", "camera", 16), photo(tmp_path / "coffee.png", "coffee", 16)]
    for column, psnr in (("NeRF", 20.5), ("BN+NeRF", 21.25)):
        (tmp_path / f"{column}.json").write_text(json.dumps({
            "experiment_name": "scene", "method_name": column, "checkpoint": "x.ckpt",
            "results": {"psnr": psnr, "psnr_std": 0.1, "ssim": 0.8, "ssim_std": 0.01}}))
    config = write_config(tmp_path / "grid.yaml", {
        "title": "tiny", "methods": ["relu", "bn"], "seeds": [0, 1], "checkpoint_every": 10,
        "tasks": {"image": {"inputs": [str(p) for p in images], "sizes": ["5x20"], "iterations": 30}},
        "nerf": {"NeRF": [str(tmp_path / "NeRF.json")], "BN+NeRF": [str(tmp_path / "BN+NeRF.json")]}})
    out = tmp_path / "sweep"
    assert main(["sweep", str(config), "--out", str(out)]) == 0

    cells = plan_cells(load_config(config), out)
    assert len(cells) == 8 and all(cell.finished for cell in cells)
    # Every cell ran at the thread count it asked Ray for (--threads-per-cell, default 1), not a probe's.
    assert all({key: value for key, value in read(c.folder).items() if key.startswith("thread")}
               == {"threads": 1, "threads_chosen_by": "--threads"} for c in cells)
    # A cell is the task command itself: the same command line outside the sweep gives the same run.
    cell = cells[-1]
    command = cell.arguments(threads=1, resume=False)
    command[command.index("--out") + 1] = str(tmp_path / "direct")
    assert main(["image", *command]) == 0
    assert read(cell.folder)["psnr"] == pytest.approx(read(tmp_path / "direct")["psnr"], abs=1e-6)

    table = (out / "table1.md").read_text()
    psnr = {method: np.mean([read(c.folder)["psnr"] for c in cells if c.method == method]) for method in ("relu", "bn")}
    best, other = sorted(psnr, key=psnr.get, reverse=True)
    row = next(line for line in table.splitlines() if line.startswith("| 2D image") and "5x20" in line)
    assert f"**{psnr[best]:.2f}**¹" in row and f"{psnr[other]:.2f}²" in row
    paper_bn = TABLE1["image"][(5, 20)]["bn"]
    assert f"{psnr['bn'] - paper_bn:+.2f}" in table and f"{paper_bn:.2f}" in table
    verdict = next(line for line in table.splitlines() if line.startswith("- BN > ReLU on every image size"))
    assert ("**holds**" if psnr["bn"] > psnr["relu"] else "**does not hold**") in verdict
    assert "- BN+NeRF > NeRF in PSNR (Sec. 4.5): **holds** — BN+NeRF 21.25 vs NeRF 20.50 dB (+0.75)" in table
    csv_rows = (out / "table1.csv").read_text().splitlines()
    assert any(line.startswith("ours,image,psnr,5x20,") for line in csv_rows)
    assert iio.imread(out / "rate_distortion.png").ndim == 3
    assert len((out / "cells.csv").read_text().splitlines()) == 9
    # The image rows in real bytes: each method's mean .bnr rate and decoded PSNR over its cells.
    real = next(line for line in table.splitlines()[table.splitlines().index("## 2D image in real bytes"):]
                if line.startswith("| 5x20"))
    for method in ("relu", "bn"):
        runs = [read(c.folder) for c in cells if c.method == method]
        assert f"{np.mean([r['bpp_file'] for r in runs]):.3f} bpp, {np.mean([r['psnr_file'] for r in runs]):.2f} dB" in real

    # A rerun runs nothing and leaves every cell's files as they were.
    stamps = {c.name: (c.folder / "metrics.json").stat().st_mtime_ns for c in cells}
    capsys.readouterr()
    assert main(["sweep", str(config), "--out", str(out)]) == 0
    assert "8 of the 8 chosen are finished, 0 to run" in capsys.readouterr().out
    assert stamps == {c.name: (c.folder / "metrics.json").stat().st_mtime_ns for c in cells}
    assert all(len(attempts(c.folder)) == 1 for c in cells)
    # A cell handed to a worker again (Ray retrying a worker lost after the cell finished) runs nothing.
    assert execute(cells[0], threads=1) == {"cell": cells[0].name, "status": "finished", "ran": False}
    assert len(attempts(cells[0].folder)) == 1 and (cells[0].folder / "metrics.json").stat().st_mtime_ns == stamps[cells[0].name]


def test_a_failing_cell_records_its_error_while_the_others_finish(tmp_path, ray_instance, capsys):
    image = photo(tmp_path / "camera.png", "camera", 16)
    config = write_config(tmp_path / "grid.yaml", {
        "methods": ["relu", "bn", "pe"], "tasks": {"image": {"inputs": [str(image)], "sizes": ["2x8"], "iterations": 20}}})
    out = tmp_path / "sweep"
    broken = plan_cells(load_config(config), out)[1]
    broken.folder.mkdir(parents=True)
    (broken.folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["sweep", str(config), "--out", str(out)]) == 1
    assert f"{broken.name}: FAILED" in capsys.readouterr().out
    cells = plan_cells(load_config(config), out)
    assert [cell.finished for cell in cells] == [True, False, True]
    assert (broken.folder / ERROR_FILE).read_text().splitlines()[0].startswith("UnpicklingError")
    table = (out / "table1.md").read_text()
    assert "2 of 3 cells finished, 1 failed" in table and "| 2x8 |" in table and "…" in table
    assert "image/camera/bn_2x8/seed0,failed," in (out / "cells.csv").read_text()
    # --table-only writes the same table elsewhere from the folder as it is, running nothing.
    assert main(["sweep", str(config), "--out", str(out), "--table-only", "--table-out", str(tmp_path / "table")]) == 0
    assert (tmp_path / "table" / "table1.md").read_text() == table and len(attempts(broken.folder)) == 1

    # Fixed, the rerun retries the failed cell only.
    (broken.folder / "checkpoint.pt").unlink()
    assert main(["sweep", str(config), "--out", str(out)]) == 0
    assert all(cell.finished for cell in cells) and not (broken.folder / ERROR_FILE).exists()
    assert [len(attempts(cell.folder)) for cell in cells] == [1, 2, 1]


def test_killing_the_driver_then_rerunning_completes_every_cell_once_and_retrains_none_from_zero(tmp_path, ray_instance):
    import ray

    image = photo(tmp_path / "camera.png", "camera", 32)
    config = write_config(tmp_path / "grid.yaml", {
        "methods": ["relu", "bn", "pe"], "checkpoint_every": 20,
        "tasks": {"image": {"inputs": [str(image)], "sizes": ["3x16"], "iterations": 1500}}})
    out = tmp_path / "sweep"
    cells = plan_cells(load_config(config), out)

    def state(cell) -> str:
        if cell.finished:
            return "finished"
        step = checkpoint_step(cell.folder)
        # A cell checkpointed near its end may finish in the moment its worker outlives the driver;
        # one with two thirds of its iterations left cannot, so that is the cell the kill interrupts.
        if step >= 20:
            return "checkpointed early" if step <= 500 else "checkpointed late"
        return "started" if cell.folder.exists() else "waiting"

    # The driver joins the module's Ray instance as a cluster would be joined (--address).
    driver = subprocess.Popen([sys.executable, "-m", "bn_nerf.cli", "sweep", str(config), "--out", str(out),
                               "--address", ray.get_runtime_context().gcs_address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    try:
        # Kill mid-way: a cell finished, another checkpointed early, and none started without a checkpoint.
        while True:
            states = [state(cell) for cell in cells]
            if "finished" in states and "checkpointed early" in states and "started" not in states:
                break
            assert driver.poll() is None, f"the sweep ended before it could be killed: {driver.stderr.read()}"
            assert time.monotonic() < deadline, f"no moment to kill in: {states}"
            time.sleep(0.01)
    finally:
        driver.kill()
        driver.wait()
    # The killed driver's workers go down with it, a moment later (Ray notices the driver's death):
    # wait for that before rerunning, as a user would. In that moment a worker may still start the
    # next cell, so what each cell holds is read only once they are down.
    def workers_alive() -> bool:
        return any(Path(f"/proc/{attempt['pid']}").exists() for cell in cells for attempt in attempts(cell.folder))

    while workers_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = {cell.name: checkpoint_step(cell.folder) for cell in cells}
    before = {cell.name: read(cell.folder) for cell in cells if cell.finished}
    interrupted = [cell for cell in cells if cell.name not in before and killed_at[cell.name]]
    assert before and interrupted

    assert main(["sweep", str(config), "--out", str(out)]) == 0
    for cell in cells:
        runs = attempts(cell.folder)
        if cell.name in before:
            assert read(cell.folder) == before[cell.name] and len(runs) == 1
        elif cell in interrupted:
            assert [run["resumed"] for run in runs] == [False, True]
            assert read(cell.folder)["resumed_from_iteration"] >= killed_at[cell.name] >= 20
        else:  # no checkpoint when the workers went down: nothing to resume, so one fresh run
            assert not runs[-1]["resumed"] and len(runs) <= 2
            assert read(cell.folder)["resumed_from_iteration"] == 0


def test_a_killed_ray_worker_is_retried_and_its_cell_resumes(tmp_path, ray_instance):
    image = photo(tmp_path / "camera.png", "camera", 32)
    config = write_config(tmp_path / "grid.yaml", {
        "methods": ["bn"], "checkpoint_every": 20,
        "tasks": {"image": {"inputs": [str(image)], "sizes": ["3x16"], "iterations": 600}}})
    out = tmp_path / "sweep"
    (cell,) = plan_cells(load_config(config), out)
    # --retries 1: the one rerun it allows is the one the cell needs.
    arguments = ["sweep", str(config), "--out", str(out), "--retries", "1"]
    codes = sweep_killing_a_worker_once_it_checkpoints(arguments, cell.folder, 60)
    assert codes == [0] and cell.finished and not (cell.folder / ERROR_FILE).exists()
    first, retry = attempts(cell.folder)
    assert first["pid"] != retry["pid"] and retry["resumed"]
    assert read(cell.folder)["resumed_from_iteration"] >= 20


def test_the_gpu_window_runs_as_a_smoke_on_the_local_engine_on_a_machine_without_ray(tmp_path, monkeypatch):
    # The GPU window's config as a lent GPU box reads it: from the working tree's root, the Kodak
    # photo under data/kodak/ (here a 768x512 stand-in), no Ray importable in the sweep or its workers.
    kodak = tmp_path / "data" / "kodak"
    kodak.mkdir(parents=True)
    pixels = resize(data.astronaut() / 255.0, (512, 768), anti_aliasing=True)
    iio.imwrite(kodak / "kodim01.png", np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    (tmp_path / "configs" / "table1").mkdir(parents=True)
    config = tmp_path / "configs" / "table1" / "gpu-window.yaml"
    config.write_text((REPOSITORY / "configs" / "table1" / "gpu-window.yaml").read_text())
    no_ray = tmp_path / "no_ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError('Ray is not installed on this machine')\n")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(no_ray.parent), str(REPOSITORY)])}
    started = time.perf_counter()
    sweep = subprocess.run([sys.executable, "-m", "bn_nerf.cli", "sweep", "configs/table1/gpu-window.yaml",
                            "--engine", "local", "--smoke", "--out", "window"],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    assert seconds <= 60, f"the smoke took {seconds:.0f} s"

    # The config names its photo relative to the working tree's root, as the sweep above read it
    # (and never this checkout's own data/, which a fresh clone does not have).
    monkeypatch.chdir(tmp_path)
    window = load_config(config)
    cells = plan_cells(smoke_config(window), tmp_path / "window")
    assert all(cell.finished for cell in cells)
    assert {(c.task, c.method) for c in cells} == {(g.task, m) for g in window.grids for m in PAPER_METHODS}
    # Shrunk as the smoke promises: tiny inputs, a few iterations; the grid itself unchanged.
    assert {read(c.folder)["iterations"] for c in cells} == {SMOKE_ITERATIONS}
    assert {(read(c.folder)["image_width"], read(c.folder)["image_height"]) for c in cells if c.task == "image"} == {(48, 32)}
    assert {read(c.folder)["image_size"] for c in cells if c.task == "ct"} == {32}
    for name in ("table1.md", "table1.csv", "cells.csv", "rate_distortion.png"):
        assert (tmp_path / "window" / name).is_file(), name
    table = (tmp_path / "window" / "table1.md").read_text()
    assert f"{len(cells)} of {len(cells)} cells finished" in table and "--engine local" in table
    assert "…" not in table.split("## Ours")[1].split("## Paper")[0]


def test_a_cell_whose_local_worker_dies_more_often_than_retries_fails_alone_and_a_rerun_resumes_it(tmp_path, capsys):
    """--retries 1: the cell's worker killed once, the cell runs again; killed again, it fails and the
    next cell runs on a new worker."""
    image = photo(tmp_path / "camera.png", "camera", 32)
    config = write_config(tmp_path / "grid.yaml", {
        "methods": ["bn", "relu"], "checkpoint_every": 20,
        "tasks": {"image": {"inputs": [str(image)], "sizes": ["3x16"], "iterations": 600}}})
    out = tmp_path / "sweep"
    victim, other = plan_cells(load_config(config), out)
    arguments = ["sweep", str(config), "--out", str(out), "--engine", "local", "--cpus", "1", "--retries", "1"]
    codes = sweep_killing_a_worker_once_it_checkpoints(arguments, victim.folder, 120, kills=2)
    # The sweep did not hang on the dead worker: the cell is failed, the next one ran on a new worker.
    assert codes == [1] and victim.failed and other.finished
    assert len(attempts(victim.folder)) == 2
    assert (victim.folder / ERROR_FILE).read_text().startswith(
        "worker process died (killed by SIGKILL) 2 time(s), after 1 retries")
    assert f"{victim.name}: FAILED: worker process died" in capsys.readouterr().out
    assert attempts(other.folder)[0]["pid"] not in {run["pid"] for run in attempts(victim.folder)}

    assert main(arguments) == 0
    assert victim.finished and not (victim.folder / ERROR_FILE).exists() and len(attempts(other.folder)) == 1
    assert [run["resumed"] for run in attempts(victim.folder)] == [False, True, True]
    assert read(victim.folder)["resumed_from_iteration"] >= 20


@pytest.mark.parametrize("flags, message", [
    (["--engine", "local", "--address", "auto"], "--address joins a Ray cluster; --engine local runs on this machine alone"),
    (["--engine", "local", "--cpus", "2", "--threads-per-cell", "3"], "--threads-per-cell 3: more than the 2 CPUs"),
])
def test_a_local_engine_request_this_machine_cannot_grant_fails_in_one_line(tmp_path, capsys, flags, message):
    config = write_config(tmp_path / "grid.yaml", {"methods": ["relu"], "tasks": {"image": {"sizes": ["2x8"], "iterations": 5}}})
    out = tmp_path / "sweep"
    assert main(["sweep", str(config), "--out", str(out), *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"methods": ["relu", "bn-plus"]}, "methods: unknown method 'bn-plus'"),
    ({"tasks": {"image": {}, "nerf": {}}}, "tasks: unknown task 'nerf'"),
    ({"tasks": {"image": {"inputs": ["missing/kodak"]}}}, "missing/kodak: no such file or folder"),
    ({"tasks": {"image": {"sizes": ["10x0"]}}}, "net size '10x0': depth and width must be > 0"),
    ({"tasks": {"image": {"sizes": ["10by28"]}}}, "net size '10by28' is not DEPTHxWIDTH"),
    ({"tasks": {"ct": {"options": {"size": 0}}}}, "--size must be > 0, got 0"),
    ({"tasks": {"image": {"options": {"blur": 2}}}}, "unrecognized arguments: --blur 2"),
    ({"tasks": {"image": {"options": {"seed": 2}}}}, "options.seed: set by the sweep"),
    ({"tasks": {"image": {"iterations": 0}}}, "tasks.image.iterations: expected an integer > 0"),
    ({"nerf": {"BN+NeRF": ["missing.json"]}}, "missing.json: no such file"),
    ({"nerf": {"BN-NeRF": ["x.json"]}}, "nerf: unknown NeRF column 'BN-NeRF'"),
])
def test_a_bad_config_fails_in_one_line_before_any_cell_starts(tmp_path, capsys, change, message):
    config = {"methods": ["relu"], "tasks": {"image": {"sizes": ["2x8"], "iterations": 5}}}
    for key, value in change.items():
        config[key] = value if key != "tasks" else {name: {"sizes": ["2x8"], "iterations": 5, **grid}
                                                    for name, grid in value.items()}
    path = write_config(tmp_path / "grid.yaml", config)
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not out.exists()


@pytest.mark.parametrize("task, name, problem", [
    ("image", "photo.png", "not a readable image (OSError: image file is truncated)"),
    ("ct", "slice.png", "not a readable image (OSError: image file is truncated)"),
    ("mri", "scan.npy", "not a readable .npy array"),
    ("occupancy", "spot.obj", "ends in the middle of a statement"),
])
def test_a_truncated_input_fails_in_one_line_before_any_cell_starts(tmp_path, capsys, task, name, problem):
    path = tmp_path / name
    if task in ("image", "ct"):
        photo(path, "camera", 16)
    elif task == "mri":
        np.save(path, np.random.default_rng(0).random((6, 6, 6)))
    else:
        path.write_bytes((REPOSITORY / "tests" / "data" / "meshes" / "spot.obj").read_bytes())
    truncated(path)
    config = {"methods": ["relu"], "tasks": {task: {"inputs": [str(path)], "sizes": ["2x8"], "iterations": 5}}}
    out = tmp_path / "sweep"
    assert main(["sweep", str(write_config(tmp_path / "grid.yaml", config)), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{path}: {problem}" in error, error
    assert not out.exists()


def test_a_folder_holding_cells_of_other_settings_is_refused(tmp_path, ray_instance, capsys):
    image = photo(tmp_path / "camera.png", "camera", 16)
    grid = {"methods": ["relu"], "tasks": {"image": {"inputs": [str(image)], "sizes": ["2x8"], "iterations": 10}}}
    out = tmp_path / "sweep"
    assert main(["sweep", str(write_config(tmp_path / "a.yaml", grid)), "--out", str(out)]) == 0
    grid["tasks"]["image"]["iterations"] = 20
    assert main(["sweep", str(write_config(tmp_path / "b.yaml", grid)), "--out", str(out)]) == 2
    assert "holds a run with other settings (iterations)" in capsys.readouterr().err


def test_every_claim_holds_on_the_papers_own_numbers():
    results = Results(list(PAPER_METHODS))
    for task, rows in TABLE1.items():
        results.sizes[task] = list(rows)
        for size, values in rows.items():
            results.ours[task][size].update(values)
    verdicts = [judge(claim, results) for claim in CLAIMS]
    assert [v.outcome for v in verdicts] == ["holds"] * len(CLAIMS), [v for v in verdicts if v.outcome != "holds"]
    # A missing cell leaves a claim undecided; a failed comparison decides it even so.
    del results.ours["image"][(5, 20)]["relu"]
    assert judge(CLAIMS[0], results).outcome == "undecided"
    results.ours["image"][(10, 40)]["relu"] = 30.0
    verdict = judge(CLAIMS[0], results)
    assert verdict.outcome == "does not hold" and "10x40: " in verdict.detail and "still lack" in verdict.detail


def test_the_table1_configs_are_the_papers_grid_and_a_cpu_grid_that_plans(tmp_path, monkeypatch):
    paper = load_config(REPOSITORY / "configs/table1/paper.yaml")
    assert {grid.task for grid in paper.grids} == set(SWEEP_TASKS)
    for grid in paper.grids:
        defaults = SWEEP_TASKS[grid.task].module.PAPER_DEFAULTS
        assert grid.sizes == defaults.sizes and grid.iterations == defaults.iterations
        assert grid.methods == PAPER_METHODS and set(grid.sizes) == set(TABLE1[grid.task])
    # cpu.yaml reads the photos scripts/skimage_photos.py writes, relative to where it runs (the
    # repository's root, whose committed ns-eval results fill its NeRF row).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").symlink_to(REPOSITORY / "results")
    photos = runpy.run_path(str(REPOSITORY / "scripts/skimage_photos.py"))
    monkeypatch.setattr(sys, "argv", ["skimage_photos.py", "data/photos64", "--side", "64"])
    photos["main"]()
    cpu = load_config(REPOSITORY / "configs/table1/cpu.yaml")
    cells = plan_cells(cpu, tmp_path / "cpu")
    assert {column for column, _ in cpu.nerf} == {"DINER", "BN+DINER"}
    for grid in cpu.grids:
        assert set(grid.sizes) == set(TABLE1[grid.task]) and grid.methods == PAPER_METHODS
    assert {cell.task for cell in cells} == set(SWEEP_TASKS) and not any(cell.finished for cell in cells)
    assert {cell.input_name for cell in cells if cell.task == "image"} <= set(photos["PHOTOS"])
