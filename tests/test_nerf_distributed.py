"""NeRF training on several processes, on the CPU (gloo; issue 25): BatchNorm whose statistics span
every process's share of the batch, and two processes training the method one process trains.

Processes are forked from the test (the imports are already done: a spawned one spends seconds
importing nerfstudio), one thread each, and a group meets through a file in the test's folder -- but
for the command line's test, whose processes nerfstudio's launcher spawns.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.distributed as dist
from torch import nn

from bn_nerf.nerf.data.scene import write_scene
from bn_nerf.nerf.engine.budget import method_config
from bn_nerf.nerf.engine.launch import main as bn_nerf_train
from bn_nerf.nerf.engine.launch import process_worker
from bn_nerf.networks import build_network, reestimate_batchnorm
from bn_nerf.networks.norms import CrossProcessBatchNorm1d, batchnorm_layers, synchronize_batchnorm

PROCESSES = 2


def run_processes(work: Callable, folder: Path, processes: int = PROCESSES, timeout: float = 120.0) -> list:
    """`work(rank)` in `processes` forked processes, each with one torch thread; returns what each
    returned (saved with torch.save). `work` joins a group itself (`join_group`) when it needs one."""
    folder.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("fork")

    def target(rank: int) -> None:
        code = 0
        try:
            torch.set_num_threads(1)
            torch.save(work(rank), folder / f"result-{rank}.pt")
        except BaseException:
            (folder / f"error-{rank}.txt").write_text(traceback.format_exc())
            code = 1
        os._exit(code)  # nothing of pytest's runs in a forked child

    children = [context.Process(target=target, args=(rank,)) for rank in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    for child in children:
        if child.is_alive():
            child.kill()
    errors = [path.read_text() for path in sorted(folder.glob("error-*.txt"))]
    assert not errors, "\n".join(errors)
    assert all(child.exitcode == 0 for child in children), [child.exitcode for child in children]
    return [torch.load(folder / f"result-{rank}.pt", weights_only=False) for rank in range(processes)]


def join_group(rank: int, folder: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=PROCESSES,
                            timeout=timedelta(seconds=60))


def close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-4) -> bool:
    """Equal to float32 tolerance, relative to the tensor's own scale (one process's float32 result
    differs from float64 by up to 1.3e-5 on these layers; a process's own statistics, by 1e-1)."""
    if actual.shape != expected.shape or expected.numel() == 0:
        return actual.shape == expected.shape
    return bool((actual - expected).abs().max() <= tolerance * (expected.abs().max() + 1e-6))


# --- one BatchNorm layer, and BN fused with its Linear -----------------------------------------------------------

# Unequal shares: each process's count is part of what the processes sum.
SHARES = (70, 50)


def layer_cases() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        # A BN on its own: the unfused Function (a trunk's last BN, which feeds the heads).
        "batchnorm": nn.BatchNorm1d(6),
        # BN after each ReLU, folded into the Linear that consumes it; BN before each ReLU, one Function
        # with the Linear that feeds it; the trunk's last BN unfused (out_dim None).
        "fused after": build_network("bn", 3, 4, 3, 8),
        "fused before": build_network("bn", 3, 4, 3, 8, norm_placement="before"),
        "trunk": build_network("bn+pe", 3, None, 2, 8, skip_connections=(1,), pe_octaves=4),
    }


def one_step(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, total: int) -> dict:
    """Outputs, input and parameter gradients of the squared error's sum over the rows / total, and the
    running statistics after the step; then the running statistics re-estimated from `inputs`, in one
    call and in two, and the eval-mode outputs."""
    net.train()
    inputs = inputs.clone().requires_grad_(True)
    outputs = net(inputs)
    nodes = graph_nodes(outputs)
    (outputs - targets).square().sum().div(total).backward()
    result = {"outputs": outputs.detach(), "input_grad": inputs.grad,
              "grads": {name: p.grad.clone() for name, p in net.named_parameters()},
              "running": [torch.cat([m.running_mean, m.running_var]) for m in batchnorm_layers(net)],
              "fused": "_NormalizedLinearBackward" in nodes}
    with torch.no_grad():
        reestimate_batchnorm(net, lambda: net(inputs.detach()))
        result["reestimated"] = [torch.cat([m.running_mean, m.running_var]) for m in batchnorm_layers(net)]
        half = len(inputs) // 2
        reestimate_batchnorm(net, lambda: [net(chunk) for chunk in inputs.detach().split(half)])
        result["reestimated in chunks"] = [torch.cat([m.running_mean, m.running_var]) for m in batchnorm_layers(net)]
        net.eval()
        result["eval outputs"] = net(inputs.detach())
    return result


def graph_nodes(output: torch.Tensor) -> set[str]:
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node.name() in seen:
            continue
        seen.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


def test_batchnorm_across_two_processes_is_batchnorm_of_the_union(tmp_path):
    """Each process holds a share of the batch; outputs, input gradients, summed parameter gradients,
    running statistics and their re-estimation equal one process's on the union -- for torch's
    BatchNorm1d in a network built before the group (converted by synchronize_batchnorm), fused or not."""
    cases = layer_cases()
    torch.manual_seed(1)
    inputs = {name: torch.randn(sum(SHARES), 6 if name == "batchnorm" else 3) * 2 + 0.5 for name in cases}
    with torch.no_grad():
        targets = {name: torch.randn_like(net(inputs[name])) for name, net in cases.items()}
    expected = {name: one_step(copy.deepcopy(net), inputs[name], targets[name], sum(SHARES))
                for name, net in cases.items()}
    starts = (0, SHARES[0])

    def work(rank: int) -> dict:
        join_group(rank, tmp_path)
        results = {}
        for name, net in cases.items():
            net = synchronize_batchnorm(copy.deepcopy(net))
            assert all(type(m) is CrossProcessBatchNorm1d for m in batchnorm_layers(net))
            share = slice(starts[rank], starts[rank] + SHARES[rank])
            result = one_step(net, inputs[name][share], targets[name][share], sum(SHARES))
            for grad in result["grads"].values():  # what DDP sums (and averages) across processes
                dist.all_reduce(grad)
            results[name] = result
        return results

    ranks = run_processes(work, tmp_path)
    for name, reference in expected.items():
        mine = [ranks[rank][name] for rank in range(PROCESSES)]
        for key in ("outputs", "input_grad", "eval outputs"):
            assert close(torch.cat([result[key] for result in mine]), reference[key]), (name, key)
        assert reference["fused"] == (name != "batchnorm")
        for rank_result in mine:
            assert rank_result["fused"] == reference["fused"], name
            for parameter, grad in reference["grads"].items():
                assert close(rank_result["grads"][parameter], grad), (name, parameter)
            for key in ("running", "reestimated", "reestimated in chunks"):
                for layer, statistics in enumerate(reference[key]):
                    assert close(rank_result[key][layer], statistics), (name, key, layer)


# --- two processes of a short training --------------------------------------------------------------------------

STEPS = 20
# The presets shrunk to seconds; the random background and the samples' jitter are off so that a
# step is a function of its rays, which both set-ups share (the union of the processes' rays is the
# one process's batch).
DETERMINISTIC = dict(random_training_background=False, stratified_training=False)
# Adam at the presets' eps (1e-15) moves a weight by the full rate whatever its gradient's size, so the
# rounding of a gradient that is zero but for rounding (the bias of a unit whose ReLU is active on every
# sample, which the BatchNorm after it shifts away) picks its direction: two float orders of one step
# part by twice the rate. With an eps above such gradients Adam's step follows the gradient smoothly.
ADAM_EPS = 1e-2
# After 20 steps at that eps, one process on 1 thread and on 2 parted by up to 1.2e-3 (bn-diner-cpu)
# and 8.4e-4 (bn-nerf-cpu) of a tensor's scale, two processes and one by 8.5e-4 and 8.2e-4.
TRAINING_TOLERANCE = 1e-2
# The grid's refreshes (every 8 steps) sample cells at random from step 8 on, not only at the end of
# the presets' 64-step warm-up.
SHRINK = {
    "bn-diner-cpu": dict(trunk_width=16, colour_width=16, table_resolution=16, log2_table_entries=14,
                         occupancy_resolution=16, occupancy_warmup_steps=8, render_step_size=0.05,
                         batchnorm_calibration_rays=256),
    "bn-nerf-cpu": dict(trunk_depth=2, trunk_width=32, skip_connections=(1,), colour_width=16,
                        occupancy_resolution=16, occupancy_warmup_steps=8, render_step_size=0.05,
                        batchnorm_calibration_rays=256),
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    write_scene(folder, size=16, views={"train": 4, "val": 1, "test": 1}, seed=1)
    return folder


def training_config(method: str, scene: Path, output: Path, timestamp: str, **overrides):
    config = method_config(method)
    for name, value in {**SHRINK[method], **overrides}.items():
        setattr(config.pipeline.model, name, value)
    for group in config.optimizers.values():
        group["optimizer"].eps = ADAM_EPS
    config.pipeline.datamanager.data = scene
    # An odd global count: the two shares differ by one ray, and each loss is weighted by its share.
    config.pipeline.datamanager.train_num_rays_per_batch = 255
    config.pipeline.min_num_rays_per_batch = 64
    config.pipeline.max_num_rays_per_batch = 255
    config.pipeline.target_num_samples = 1 << 12
    config.output_dir = output
    config.vis = "tensorboard"
    config.threads = 1
    config.max_num_iterations = STEPS
    config.steps_per_save = STEPS
    config.timestamp = timestamp
    config.machine.num_devices = PROCESSES
    return config


def train_and_report(local_rank: int, world_size: int, config, global_rank: int = 0) -> dict:
    """nerfstudio's train_loop (seeded as it seeds each process), returning what the process holds."""
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed + global_rank)
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    model = trainer.pipeline.model
    if config.load_dir is None and hasattr(model.field.position_encoding, "table"):
        # instant-ngp's table init (1e-4) leaves the first layer's outputs its bias plus variations
        # 1e4 times smaller, which BatchNorm scales back up with float32's rounding of the bias in them:
        # any two float orders of a young BN-DINER part at 1e-4 a step. Entries of a trained table's size.
        with torch.no_grad():
            model.field.position_encoding.table.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(0))
    trainer.train()
    return {"state": {name: value.detach().clone() for name, value in model.state_dict().items()},
            "rays": trainer.pipeline.datamanager.train_pixel_sampler.num_rays_per_batch,
            "batchnorm": {type(layer).__name__ for layer in batchnorm_layers(model)}}


def train_on_processes(config, folder: Path) -> list[dict]:
    config.save_config()
    return run_processes(lambda rank: process_worker(rank, train_and_report, PROCESSES, PROCESSES, 0,
                                                     f"file://{folder / 'rendezvous'}", config,
                                                     timedelta(seconds=60), "cpu"), folder)


def train_on_one_process(config, folder: Path) -> dict:
    config.machine.num_devices = 1
    config.save_config()
    return run_processes(lambda rank: train_and_report(0, 1, config), folder, processes=1)[0]


def assert_same_training(first: dict, second: dict, single: dict) -> None:
    """Two processes hold identical weights, BN statistics and occupancy grid, equal to one process's."""
    assert first["state"].keys() == second["state"].keys() == single["state"].keys()
    assert "occupancy_grid.estimator.binaries" in first["state"]
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name
        assert close(value.double(), single["state"][name].double(), TRAINING_TOLERANCE), name
    # Each process kept a share of the step's global count: equal, or one apart.
    assert abs(first["rays"] - second["rays"]) <= 1


@pytest.mark.parametrize("method", ["bn-diner-cpu", "bn-nerf-cpu"])
def test_two_processes_train_what_one_process_trains(method, scene, tmp_path):
    """20 steps of the preset on 2 processes (BatchNorm built synced in their group, the plain one on
    one process) end as one process's of the same global batch; the first process's checkpoint then
    resumes on 2 processes as on 1."""
    runs = tmp_path / "runs"
    config = training_config(method, scene, runs, "two", **DETERMINISTIC)
    first, second = train_on_processes(config, tmp_path / "two")
    single = train_on_one_process(training_config(method, scene, runs, "one", **DETERMINISTIC), tmp_path / "one")
    assert first["batchnorm"] == second["batchnorm"] == {"CrossProcessBatchNorm1d"}
    assert single["batchnorm"] == {"BatchNorm1d"}
    assert_same_training(first, second, single)

    [checkpoint] = runs.glob(f"*/{method}/two/nerfstudio_models/*.ckpt")
    assert checkpoint.name == f"step-{STEPS - 1:09d}.ckpt"
    resumed = {}
    for processes in (2, 1):
        config = training_config(method, scene, runs, f"resumed-on-{processes}", **DETERMINISTIC)
        config.load_dir, config.max_num_iterations = checkpoint.parent, 5
        folder = tmp_path / f"resumed-on-{processes}"
        resumed[processes] = train_on_processes(config, folder) if processes == 2 else train_on_one_process(config, folder)
    assert_same_training(*resumed[2], resumed[1])
    [checkpoint] = runs.glob(f"*/{method}/resumed-on-2/nerfstudio_models/*.ckpt")
    assert checkpoint.name == f"step-{STEPS + 4:09d}.ckpt"


def test_two_processes_stay_identical_with_the_presets_randomness(scene, tmp_path):
    """The samples' jitter and random backgrounds on, as the presets train, and 255 rays a step: each
    process draws them for its own share, 128 or 127 rays, so their random streams part every step --
    yet every step's ray batch and every grid refresh's cells are drawn alike, and the processes end
    identical."""
    config = training_config("bn-diner-cpu", scene, tmp_path / "runs", "two")
    config.pipeline.min_num_rays_per_batch = 255
    first, second = train_on_processes(config, tmp_path / "two")
    assert {first["rays"], second["rays"]} == {128, 127}
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name


def test_bn_nerf_train_starts_two_cpu_processes_from_the_command_line(scene, tmp_path, monkeypatch):
    """What a user types on a CPU: `bn-nerf-train bn-diner-cpu --machine.num-devices 2` (ns-train's
    arguments; nerfstudio's own launcher stops at its CUDA assertion), run here as its console script
    runs it. nerfstudio's launcher spawns two processes that train on a gloo group, and the run folder
    holds the one checkpoint the first process wrote."""
    shrink = [f"--pipeline.model.{name.replace('_', '-')}={value}" for name, value in SHRINK["bn-diner-cpu"].items()]
    monkeypatch.setattr(sys, "argv", [
        "bn-nerf-train", "bn-diner-cpu", "--data", str(scene), "--output-dir", str(tmp_path), "--machine.num-devices", "2",
        "--max-num-iterations", "3", "--vis", "tensorboard", "--timestamp", "cli",
        "--pipeline.datamanager.train-num-rays-per-batch", "128", *shrink])
    bn_nerf_train()
    [checkpoint] = tmp_path.glob("*/bn-diner-cpu/cli/nerfstudio_models/*.ckpt")
    assert checkpoint.name == "step-000000002.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
    # Saved from the DDP-wrapped model, as nerfstudio saves it; ns-eval and resumes read these keys.
    assert any(key.startswith("_model.module.field.") for key in state)


def render_a_share_and_report(local_rank: int, world_size: int, config, global_rank: int = 0) -> dict:
    """One training-mode forward and backward of the model on this process's rays: the first process's
    cross the scene box, the second's start outside it and point away, so that no sample is its own."""
    from nerfstudio.cameras.rays import RayBundle

    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    model = trainer.pipeline.model
    model.train()
    rays = 64
    directions = torch.nn.functional.normalize(torch.randn(rays, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    origins = -4 * directions if global_rank == 0 else 4 * directions
    bundle = RayBundle(origins=origins, directions=directions, pixel_area=torch.full((rays, 1), 1e-4),
                       camera_indices=torch.zeros(rays, 1, dtype=torch.int64), nears=torch.full((rays, 1), 0.05),
                       fars=torch.full((rays, 1), 10.0))
    grid = model.occupancy_grid.estimator.binaries.clone()
    outputs = model(bundle)
    outputs["rgb"].square().mean().backward()
    return {"samples": int(outputs["num_samples_per_ray"].sum()), "rgb": outputs["rgb"].detach(),
            "grid kept": torch.equal(grid, model.occupancy_grid.estimator.binaries),
            "gradient": sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)}


def test_a_process_without_samples_of_its_own_still_joins_the_group(scene, tmp_path):
    """A training batch whose share on one process meets no occupied cell: that process renders its
    background and takes part in BatchNorm's collectives with no rows, while the other trains on its
    samples -- neither waits forever for the other, and neither resets the grid alone."""
    config = training_config("bn-diner-cpu", scene, tmp_path / "runs", "two", **DETERMINISTIC)
    config.save_config()
    first, second = run_processes(lambda rank: process_worker(rank, render_a_share_and_report, PROCESSES, PROCESSES, 0,
                                                              f"file://{tmp_path / 'rendezvous'}", config,
                                                              timedelta(seconds=30), "cpu"), tmp_path, timeout=90)
    assert first["samples"] > 100 and second["samples"] == 0
    assert first["grid kept"] and second["grid kept"]
    assert first["gradient"] > 0 and torch.isfinite(first["rgb"]).all()
    # The second process's rays see only the (fixed) background.
    assert torch.allclose(second["rgb"], second["rgb"][:1].expand_as(second["rgb"]))
