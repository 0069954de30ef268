"""The training protocol every method shares: which iterate a run keeps and how its learning rate
evolves (REPRODUCTION.md, "Table 1")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.transform import resize

from bn_nerf.networks import build_network
from bn_nerf.signals.solids import BumpySphere
from bn_nerf.tasks.image import ImageTask
from bn_nerf.tasks.occupancy import PAPER_DEFAULTS as OCCUPANCY_DEFAULTS, OccupancyTask
from bn_nerf.tasks.trainer import RunSpec, TrainConfig, fit


def small_photo(side: int = 16) -> np.ndarray:
    return resize(data.astronaut() / 255.0, (side, side), anti_aliasing=True).astype(np.float32)


def saved_training_loss(task: ImageTask, folder, spec: RunSpec) -> float:
    """The full-batch training loss of the network a run saved (no BatchNorm: nothing re-estimated)."""
    net = build_network(spec.method, task.in_dim, task.out_dim, spec.depth, spec.width)
    net.load_state_dict(torch.load(folder / "network.pt")["network"])
    with torch.no_grad():
        return float(F.mse_loss(net(task.grid.coordinates), task.pixels))


def test_a_full_batch_run_keeps_the_iterate_with_the_lowest_training_loss(tmp_path):
    task, spec = ImageTask(small_photo()), RunSpec("siren", 3, 32)
    # SIREN at 30x its usual learning rate: the loss jumps about, so the best is not the last.
    settings = dict(iterations=100, learning_rate=3e-2, checkpoint_every=0, show_progress=False)
    best, _ = fit(task, spec, TrainConfig(**settings), tmp_path / "best")
    last, _ = fit(task, spec, TrainConfig(**settings, keep="last"), tmp_path / "last")
    assert best["kept"] == "best" and best["kept_iteration"] < 100, best["kept_iteration"]
    assert last["kept"] == "last" and last["kept_iteration"] == 100
    # The saved network is the kept iterate: its loss is the recorded one, below the last iterate's.
    kept_loss = saved_training_loss(task, tmp_path / "best", spec)
    assert kept_loss == pytest.approx(best["kept_training_loss"], rel=1e-5)
    assert kept_loss < saved_training_loss(task, tmp_path / "last", spec)
    assert best["psnr"] > last["psnr"]


def test_a_sampled_batch_run_keeps_its_last_iterate(tmp_path):
    metrics, _ = fit(ImageTask(small_photo(), batch_size=64), RunSpec("relu", 2, 16),
                     TrainConfig(20, 1e-3, checkpoint_every=0, show_progress=False), tmp_path)
    assert metrics["kept"] == "last" and metrics["kept_iteration"] == 20 and "kept_training_loss" not in metrics


def test_a_curve_point_is_what_a_run_of_that_length_reports_and_leaves_training_alone(tmp_path):
    # BN+PE at the paper's 1e-2: the kept iterate is not always the last and BN is re-estimated.
    task, spec = ImageTask(small_photo()), RunSpec("bn+pe", 2, 16)
    settings = dict(learning_rate=1e-2, checkpoint_every=0, show_progress=False)
    reported = []
    long, _ = fit(task, spec, TrainConfig(40, evaluate_at=(15, 40), **settings), tmp_path / "long",
                  on_curve_point=reported.append)
    short, _ = fit(task, spec, TrainConfig(15, **settings), tmp_path / "short")
    plain, _ = fit(task, spec, TrainConfig(40, **settings), tmp_path / "plain")
    assert reported == long["curve"] and [point["iteration"] for point in reported] == [15, 40]
    for point, run in zip(reported, (short, long)):
        assert point["psnr"] == pytest.approx(run["psnr"], abs=1e-4)
        assert point["psnr_train_mode"] == pytest.approx(run["psnr_train_mode"], abs=1e-4)
        assert point["kept_iteration"] == run["kept_iteration"]
    assert long["psnr"] == pytest.approx(plain["psnr"], abs=1e-4)


@pytest.mark.parametrize("task_name", ["image", "occupancy"])
def test_the_learning_rate_is_the_papers_initial_one_unless_the_paper_states_a_minimum(tmp_path, task_name):
    if task_name == "image":
        task, train = ImageTask(small_photo(8)), TrainConfig(10, 2e-4, checkpoint_every=0, show_progress=False)
        expected = 2e-4
    else:
        task = OccupancyTask(BumpySphere(), pool_points=2000, points_per_iteration=200, eval_resolution=8)
        train = TrainConfig(10, OCCUPANCY_DEFAULTS.learning_rate, OCCUPANCY_DEFAULTS.final_learning_rate,
                            checkpoint_every=0, show_progress=False)
        expected = 5e-4
    metrics, _ = fit(task, RunSpec("relu", 2, 8), train, tmp_path)
    last_step_lr = torch.load(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"][0]["lr"]
    assert last_step_lr == pytest.approx(expected, rel=1e-6) and metrics["final_learning_rate"] == pytest.approx(expected)
