"""NeRF training on several processes: what it buys on this machine, and what it would on GPUs.

    nice -n 10 python scripts/benchmark_distributed.py --output results/benchmark-distributed

1. Measured: bn-diner-cpu (default: the preset as shipped) on the embedded procedural scene at
   100x100, one process on 2 threads against 2 processes on one thread each (gloo, bn-nerf-train's
   worker), the same global batch and steps: steps per second and the eval-mode test PSNR after them
   (BatchNorm re-estimated as before a checkpoint).
2. Counted and measured: the messages one step of bn-nerf's GPU default (8x256 field behind a 128^3
   grid, 65,536 samples a step) sends -- DDP's gradient all-reduce, BatchNorm's statistics (torch's
   SyncBatchNorm on NCCL: an all-gather forward, an all-reduce backward, per layer), the sample
   count, the first process's random states before the ray batch, the grid's refresh every 16
   steps -- in bytes, and the time the same messages take here between 2 processes (gloo over
   loopback).
3. Estimated: the speed-up of that step on 2, 4, 8 GPUs of one machine. One GPU's step is the
   larger of its counted FLOPs, bytes and kernel launches at scripts/estimate_gpu_window.py's H200
   rates; W GPUs split the FLOPs and bytes W ways but launch every kernel each, and add NCCL's time
   for the step's messages: per collective a latency (--nccl-latency-us) plus its ring traffic,
   2 (W-1)/W x bytes for an all-reduce and (W-1)/W x bytes gathered for an all-gather, at a bus
   bandwidth (--nccl-bandwidth-gbs; NVLink in one machine: hundreds of GB/s, PCIe: tens).

The figures go to stdout, and with the machine's CPU model to OUTPUT/processes.json (part 1) and
OUTPUT/gpu_default_step.json (parts 2 and 3); `--parts` runs one of them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from bn_nerf.nerf.data.scene import write_scene
from bn_nerf.nerf.engine.budget import method_config, train
from bn_nerf.nerf.engine.launch import process_worker
from bn_nerf.nerf.fields.radiance_field import make_nerf_field
from bn_nerf.networks.norms import batchnorm_layers
from bn_nerf.runtime import cpu_model

ESTIMATE = Path(__file__).resolve().parent / "estimate_gpu_window.py"
GRID_UPDATE_EVERY = 16


def in_forked_processes(work: Callable[[int], dict], processes: int, folder: Path, timeout: float = 1800) -> list[dict]:
    """`work(rank)` in `processes` processes forked from this one (its imports done); their results."""
    folder.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("fork")

    def target(rank: int) -> None:
        code = 0
        try:
            (folder / f"result-{rank}.json").write_text(json.dumps(work(rank)))
        except BaseException:
            (folder / f"error-{rank}.txt").write_text(traceback.format_exc())
            code = 1
        os._exit(code)

    children = [context.Process(target=target, args=(rank,)) for rank in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    errors = [path.read_text() for path in folder.glob("error-*.txt")]
    if errors or any(child.exitcode != 0 for child in children):
        raise RuntimeError("\n".join(errors) or f"exit codes {[child.exitcode for child in children]}")
    return [json.loads((folder / f"result-{rank}.json").read_text()) for rank in range(processes)]


# --- 1. one process x 2 threads against 2 processes x 1 thread ------------------------------------------------------

def training_config(method: str, scene: Path, output: Path, threads: int, processes: int, steps: int):
    config = method_config(method)
    config.pipeline.datamanager.data = scene
    config.output_dir = output
    config.vis = "tensorboard"
    config.threads = threads
    config.max_num_iterations = steps
    config.machine.num_devices = processes
    config.set_timestamp()
    return config


def train_and_measure(local_rank: int, world_size: int, config, global_rank: int = 0) -> dict:
    """`steps` steps as nerfstudio's loop runs them, then the eval-mode test PSNR (rank 0)."""
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed + global_rank)
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup(test_mode="test")
    record = train(trainer, steps=config.max_num_iterations)
    # Every process takes part in the re-estimation; the first one renders the test views.
    trainer.calibrate_batchnorm(record.steps)
    result = {"steps": record.steps, "seconds": record.seconds, "threads": torch.get_num_threads()}
    if global_rank == 0:
        pipeline = trainer.pipeline
        pipeline.eval()
        result["test_psnr"] = float(pipeline.get_average_eval_image_metrics()["psnr"])
    return result


def compare_process_counts(method: str, scene: Path, folder: Path, steps: int) -> list[dict]:
    rows = []
    for processes, threads in ((1, 2), (2, 1)):
        config = training_config(method, scene, folder / "runs", threads, processes, steps)
        config.save_config()
        if processes == 1:
            [result] = in_forked_processes(lambda rank: train_and_measure(0, 1, config), 1, folder / "one")
            seconds = result["seconds"]
        else:
            rendezvous = f"file://{folder / 'rendezvous'}"
            results = in_forked_processes(
                lambda rank: process_worker(rank, train_and_measure, processes, processes, 0, rendezvous, config,
                                            timedelta(minutes=10), "cpu"), processes, folder / "two")
            result, seconds = results[0], max(r["seconds"] for r in results)
        rows.append({"method": method, "processes": processes, "threads_per_process": result["threads"],
                     "steps": result["steps"], "seconds": round(seconds, 1),
                     "steps_per_s": round(result["steps"] / seconds, 2), "test_psnr": round(result["test_psnr"], 2)})
    return rows


# --- 2. what a step of bn-nerf's GPU default sends -------------------------------------------------------------------

def gpu_default_messages() -> dict:
    """The collectives of one distributed step of bn-nerf's GPU default on NCCL, per process:
    (kind, bytes a process contributes, how many times a step)."""
    model = method_config("bn-nerf").pipeline.model
    field = make_nerf_field(trunk_depth=model.trunk_depth, trunk_width=model.trunk_width,
                            skip_connections=model.skip_connections, colour_depth=model.colour_depth,
                            colour_width=model.colour_width)
    parameters = sum(p.numel() for p in field.parameters())
    widths = [layer.num_features for layer in batchnorm_layers(field)]
    cells = model.occupancy_resolution ** 3
    # After the warm-up nerfacc evaluates a quarter of the cells at random plus up to as many occupied ones.
    refreshed_cells = cells // 2
    # The first process's random states, before each ray batch and each grid refresh: torch's CPU
    # generator (Mersenne twister) and CUDA's (Philox seed and offset).
    random_states = [("broadcast", torch.get_rng_state().numel(), "the CPU random state"),
                     ("broadcast", 16, "the CUDA random state")]
    messages = [("all_reduce", 4 * parameters, 1, "DDP: the gradients (float32)"),
                ("all_reduce", 8, 1, "sample budget: the step's sample count"),
                *((kind, size, 1, f"{what}, before the ray batch") for kind, size, what in random_states)]
    for width in widths:
        messages.append(("all_gather", 4 * (2 * width + 1), 1, f"SyncBatchNorm {width}: mean, invstd, count"))
        messages.append(("all_reduce", 4 * 2 * width, 1, f"SyncBatchNorm {width}: the gradient's two sums"))
    messages.append(("all_reduce", 4 * refreshed_cells, 1 / GRID_UPDATE_EVERY,
                     f"grid refresh of {refreshed_cells:,} cells every {GRID_UPDATE_EVERY} steps"))
    messages.extend((kind, size, 1 / GRID_UPDATE_EVERY, f"{what}, before a grid refresh")
                    for kind, size, what in random_states)
    return {"parameters": parameters, "batchnorm_widths": widths, "messages": messages}


def time_messages_here(messages: list, folder: Path, repeats: int = 20) -> float:
    """Seconds per step the messages take between 2 processes of this machine (gloo), medians of repeats."""

    def work(rank: int) -> dict:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=2)
        try:
            per_step = 0.0
            for kind, size, per, _ in messages:
                values = torch.ones(max(size // 4, 1))
                gathered = torch.empty(2 * len(values))
                times = []
                for _ in range(repeats):
                    dist.barrier()
                    started = time.perf_counter()
                    if kind == "all_reduce":
                        dist.all_reduce(values)
                    elif kind == "broadcast":
                        dist.broadcast(values, src=0)
                    else:
                        dist.all_gather_into_tensor(gathered, values)
                    times.append(time.perf_counter() - started)
                per_step += statistics.median(times) * per
            return {"seconds": per_step}
        finally:
            dist.destroy_process_group()

    return max(result["seconds"] for result in in_forked_processes(work, 2, folder))


# --- 3. the speed-up on GPUs --------------------------------------------------------------------------------------

def count_gpu_default_step(scene: Path, folder: Path) -> dict:
    """Operations, FLOPs and bytes of one step of bn-nerf's GPU default at its sample budget (the second
    step: the first sizes the ray count), counted on this CPU as estimate_gpu_window counts a cell's.
    The grid's refresh (every 16 steps, split among the processes too) is not in it."""
    import runpy

    estimate = runpy.run_path(str(ESTIMATE))

    def work(rank: int) -> dict:
        torch.set_num_threads(1)
        config = training_config("bn-nerf", scene, folder / "runs", 1, 1, 2)
        config.machine.device_type = "cpu"
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
        train(trainer, steps=1)
        counter = estimate["OperationCounter"]()
        with estimate["adam_as_on_cuda"](), counter:
            _, _, metrics = trainer.train_iteration(1)
        return {**counter.totals, "samples": int(metrics["num_samples_per_batch"])}

    [counted] = in_forked_processes(work, 1, folder)
    return {**counted, "flop_rate": estimate["FLOP_RATE"], "bandwidth": estimate["BANDWIDTH"],
            "launch_seconds": estimate["LAUNCH_SECONDS"]}


def gpu_speed_ups(step: dict, messages: list, latency: float, bandwidth: float, counts=(1, 2, 4, 8)) -> list[dict]:
    rows = []
    for processes in counts:
        compute = max(step["flops"] / processes / step["flop_rate"], step["bytes"] / processes / step["bandwidth"],
                      step["operations"] * step["launch_seconds"])
        communication = 0.0
        if processes > 1:
            # Ring algorithms: an all-reduce moves 2 (W-1)/W of its bytes through each link, an all-gather
            # (W-1)/W of the gathered bytes; a broadcast's pipeline about its bytes once.
            traffic = {"all_reduce": lambda size: 2 * (processes - 1) / processes * size,
                       "all_gather": lambda size: (processes - 1) * size,
                       "broadcast": lambda size: size}
            for kind, size, per, _ in messages:
                communication += per * (latency + traffic[kind](size) / bandwidth)
        rows.append({"gpus": processes, "compute_ms": round(compute * 1e3, 2),
                     "communication_ms": round(communication * 1e3, 3),
                     "step_ms": round((compute + communication) * 1e3, 2)})
    single = rows[0]["step_ms"]
    for row in rows:
        row["speed_up"] = round(single / row["step_ms"], 2)
    return rows


def measure_processes(args, scene: Path, scratch: Path) -> None:
    rows = compare_process_counts(args.method, scene, scratch / "processes", args.steps)
    (args.output / "processes.json").write_text(json.dumps({"cpu": cpu_model(), "torch": torch.__version__,
                                                            "rows": rows}, indent=2))
    print(f"machine: {cpu_model()}, torch {torch.__version__}")
    print("method | processes | threads/process | steps | seconds | steps/s | test PSNR")
    for row in rows:
        print(" | ".join(str(row[key]) for key in ("method", "processes", "threads_per_process", "steps", "seconds",
                                                  "steps_per_s", "test_psnr")))


def measure_gpu_default_step(args, scene: Path, scratch: Path) -> None:
    messages = gpu_default_messages()
    here = time_messages_here(messages["messages"], scratch / "messages")
    step = count_gpu_default_step(scene, scratch / "count")
    speed_ups = gpu_speed_ups(step, messages["messages"], args.nccl_latency_us * 1e-6, args.nccl_bandwidth_gbs * 1e9)
    step_bytes = sum(size * per for _, size, per, _ in messages["messages"])
    every_step = sum(1 for _, _, per, _ in messages["messages"] if per == 1)
    report = {"cpu": cpu_model(), "torch": torch.__version__,
              "parameters": messages["parameters"], "batchnorm_widths": messages["batchnorm_widths"],
              "messages": [{"kind": kind, "bytes": size, "per_step": per, "what": what}
                           for kind, size, per, what in messages["messages"]],
              "bytes_per_step": round(step_bytes), "collectives_every_step": every_step,
              "seconds_here_2_processes_gloo": round(here, 5),
              "counted": {key: step[key] for key in ("operations", "flops", "bytes", "samples")},
              "gpu_estimate": {"nccl_latency_us": args.nccl_latency_us, "nccl_bandwidth_gbs": args.nccl_bandwidth_gbs,
                               "rows": speed_ups}}
    (args.output / "gpu_default_step.json").write_text(json.dumps(report, indent=2))
    print(f"bn-nerf GPU default step ({step['samples']:,} samples counted): {step_bytes / 1e6:.2f} MB a step in "
          f"{every_step} collectives (+ the grid's every {GRID_UPDATE_EVERY} steps); here, 2 processes on gloo: "
          f"{here * 1e3:.1f} ms a step")
    print("GPUs | compute ms | communication ms | step ms | speed-up")
    for row in speed_ups:
        print(" | ".join(str(row[key]) for key in ("gpus", "compute_ms", "communication_ms", "step_ms", "speed_up")))


PARTS = {"processes": measure_processes, "gpu-step": measure_gpu_default_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("results/benchmark-distributed"))
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                        help="processes: part 1 (processes.json); gpu-step: parts 2 and 3 (gpu_default_step.json)")
    parser.add_argument("--method", default="bn-diner-cpu", help="the CPU preset of part 1")
    parser.add_argument("--steps", type=int, default=120, help="training steps of part 1")
    parser.add_argument("--nccl-latency-us", type=float, default=20.0,
                        help="one small NCCL collective among the GPUs of one machine")
    parser.add_argument("--nccl-bandwidth-gbs", type=float, default=300.0,
                        help="NCCL bus bandwidth (NVLink in one machine; PCIe: about 20)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        scene = scratch / "scene"
        write_scene(scene, size=100, views={"train": 50, "val": 2, "test": 4})
        for part in args.parts:
            PARTS[part](args, scene, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
