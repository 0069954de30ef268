"""bn-nerf against nerfstudio's vanilla-nerf at identical settings: training rays a second, and what
bn-nerf's checkpoint-time BatchNorm re-estimation costs.

    python scripts/benchmark_nerf_speed.py --scene data/lego-100 --threads 1 2 --repeats 8

Models: nerfstudio's vanilla-nerf (its LPIPS, which downloads weights, left out of the process) and
bn-nerf with the hierarchical sampler, BN on and BN off -- all with vanilla-nerf's sampling (64 coarse
+ 128 fine samples) and 8x256 fields, --rays rays a step. For each thread count, every model trains
in this one process with its steps interleaved (A B C A B C ...), so that load on the shared CPU falls
on all of them alike; a step is nerfstudio's own (`Trainer.train_iteration` with its callbacks).
Printed: each model's median rays/s and its ratio to vanilla-nerf's; the seconds of one BN
re-estimation (what each checkpoint adds to a bn-nerf run); and the rays/s of a whole run of
--run-steps steps with a checkpoint every --steps-per-save, which is what an `ns-train` user sees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmark_nerf import configured, machine
from bn_nerf.nerf.engine.budget import method_config, setup_trainer, train

LABELS = ("vanilla-nerf", "bn-nerf (BN)", "bn-nerf (BN off)")


def speed_config(label: str, rays: int):
    if label == "vanilla-nerf":
        config = configured("vanilla-nerf")
    else:
        config = method_config("bn-nerf")
        config.pipeline.model.sampler = "hierarchical"
        config.pipeline.model.normalization = "batch" if label == "bn-nerf (BN)" else "none"
    config.pipeline.datamanager.train_num_rays_per_batch = rays
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="Blender-format scene")
    parser.add_argument("--rays", type=int, default=256, help="rays a training step (default 256)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, each measured in turn")
    parser.add_argument("--repeats", type=int, default=8, help="timed steps per model and thread count")
    parser.add_argument("--run-steps", type=int, default=20000, help="length of the run whose rays/s is printed")
    parser.add_argument("--steps-per-save", type=int, default=2000, help="checkpoints in that run (nerfstudio's default: 2000)")
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark-nerf-speed"))
    args = parser.parse_args()
    report = {"machine_at_start": machine(), "rays": args.rays, "scene": str(args.scene), "threads": {}}
    torch.set_num_threads(max(args.threads))
    trainers = {label: setup_trainer(speed_config(label, args.rays), args.scene, args.output / label, "cpu")
                for label in LABELS}
    steps = {label: 0 for label in LABELS}
    for threads in args.threads:
        torch.set_num_threads(threads)
        seconds = {label: [] for label in LABELS}
        for repeat in range(args.repeats + 1):  # the first round warms up kernels and the allocator
            for label, trainer in trainers.items():
                record = train(trainer, steps=1)
                steps[label] += 1
                if repeat:
                    seconds[label].append(record.seconds)
        rays_per_second = {label: args.rays / statistics.median(values) for label, values in seconds.items()}
        bn_trainer = trainers["bn-nerf (BN)"]
        started = time.perf_counter()
        bn_trainer.calibrate_batchnorm(steps["bn-nerf (BN)"])
        calibration = time.perf_counter() - started
        step_seconds = args.rays / rays_per_second["bn-nerf (BN)"]
        checkpoints = args.run_steps // args.steps_per_save
        run_rays_per_second = args.rays * args.run_steps / (args.run_steps * step_seconds + checkpoints * calibration)
        row = {
            "rays_per_second": {label: round(value, 1) for label, value in rays_per_second.items()},
            "ratio_to_vanilla_nerf": {label: round(value / rays_per_second["vanilla-nerf"], 3)
                                      for label, value in rays_per_second.items()},
            "step_seconds": {label: [round(value, 3) for value in values] for label, values in seconds.items()},
            "batchnorm_reestimation_seconds": round(calibration, 2),
            "batchnorm_calibration_rays": bn_trainer.pipeline.model.config.batchnorm_calibration_rays,
            "bn_nerf_run_rays_per_second": round(run_rays_per_second, 1),
            "bn_nerf_run_ratio_to_vanilla_nerf": round(run_rays_per_second / rays_per_second["vanilla-nerf"], 3),
        }
        report["threads"][threads] = row
        print(f"threads {threads}: " + ", ".join(f"{label} {value:.0f} rays/s ({row['ratio_to_vanilla_nerf'][label]:.2f}x)"
                                                 for label, value in rays_per_second.items()), flush=True)
        print(f"  BN re-estimation {calibration:.1f} s ({row['batchnorm_calibration_rays']} rays); a {args.run_steps}-step "
              f"run saving every {args.steps_per_save}: {run_rays_per_second:.0f} rays/s "
              f"({row['bn_nerf_run_ratio_to_vanilla_nerf']:.2f}x vanilla-nerf's steps alone)", flush=True)
    report["machine_at_end"] = machine()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
