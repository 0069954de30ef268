"""NeRF vs BN-NeRF and DINER vs BN-DINER at a fixed training-time budget on the generated scene, and
bn-nerf's training speed against nerfstudio's vanilla-nerf at the same settings.

Per run (the -cpu presets; --pipeline.model.normalization none|batch is the only change within a pair):
  - test PSNR/SSIM on every test image, eval mode, after the BN re-estimation a checkpoint gets;
  - train rays/s (training steps only; calibration and evaluation are not counted);
  - a PSNR curve on a fixed sample of test rays, checked at training times budget/2^k, from which
    the time to --target-psnr and the time DINER needs to reach NeRF's final PSNR are read.
Speed: bn-nerf (vanilla-nerf's 8x256 field) with BN and without, and vanilla-nerf itself, at the same
rays and samples per step, timed in alternating steps so that the shared CPU's load falls on all alike.
vanilla-nerf builds an LPIPS that downloads AlexNet weights; it is left out of this process.

    python scripts/benchmark_nerf.py --budget 180 --target-psnr 20 --output outputs/benchmark-nerf
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import subprocess
import time
from pathlib import Path

import torch

from nerfstudio.plugins.registry import discover_methods

from bn_nerf.nerf.metrics import image_metrics, psnr
from bn_nerf.nerf.models import BNNeRFModel
from bn_nerf.nerf.scene import write_scene

CHECK_RAYS = 2048


def make_trainer(config, scene: Path, output: Path):
    config = copy.deepcopy(config)
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = output
    config.pipeline.datamanager.data = scene
    config.set_timestamp()
    torch.manual_seed(0)
    random.seed(0)  # nerfstudio's image loader draws its image order with Python's random
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup(test_mode="test")  # the eval dataset is the test split, as in ns-eval
    return trainer


def calibrate(trainer) -> None:
    """What a checkpoint gets before it is written: BN statistics re-estimated from training rays."""
    model = trainer.pipeline.model
    if isinstance(model, BNNeRFModel) and model.has_batchnorm:
        datamanager = trainer.pipeline.datamanager
        batches = -(-model.config.batchnorm_calibration_rays // datamanager.config.train_num_rays_per_batch)
        model.reestimate_batchnorm_statistics([datamanager.next_train(0)[0] for _ in range(batches)])


class TestRays:
    """A fixed random sample of test-split rays and their colours (for the PSNR curve)."""

    def __init__(self, pipeline, count: int):
        dataset = pipeline.datamanager.eval_dataset
        coords = dataset.cameras.get_image_coords().reshape(-1, 2)
        generator = torch.Generator().manual_seed(0)
        self.cameras = torch.randint(len(dataset), (count,), generator=generator)
        self.pixel_indices = torch.randint(len(coords), (count,), generator=generator)
        self.coords = coords[self.pixel_indices]
        self.dataset = dataset
        images = torch.stack([dataset[index]["image"][..., :3].reshape(-1, 3) for index in range(len(dataset))])
        self.pixels = images[self.cameras, self.pixel_indices]

    @torch.no_grad()
    def psnr(self, model) -> float:
        model.eval()
        try:
            rays = self.dataset.cameras.generate_rays(camera_indices=self.cameras[:, None], coords=self.coords)
            return float(psnr(model(rays)["rgb_fine"], self.pixels))
        finally:
            model.train()


@torch.no_grad()
def test_metrics(pipeline) -> dict[str, float]:
    dataset = pipeline.datamanager.eval_dataset
    model = pipeline.model
    model.eval()
    scores = []
    for index in range(len(dataset)):
        rays = dataset.cameras.generate_rays(camera_indices=index, keep_shape=True)
        image = model.renderer_rgb.blend_background(dataset[index]["image"])
        scores.append(image_metrics(model.get_outputs_for_camera_ray_bundle(rays)["rgb_fine"], image))
    model.train()
    return {key: sum(s[key] for s in scores) / len(scores) for key in ("psnr", "ssim")}


def run(label: str, config, scene: Path, output: Path, budget: float, checks: int, target: float) -> dict:
    trainer = make_trainer(config, scene, output)
    test_rays = TestRays(trainer.pipeline, CHECK_RAYS)
    rays_per_step = trainer.pipeline.datamanager.config.train_num_rays_per_batch
    check_times = [budget / 2**k for k in range(checks - 1, -1, -1)]
    curve, train_seconds, step = [], 0.0, 0
    trainer.pipeline.train()
    while check_times:
        start = time.perf_counter()
        trainer.train_iteration(step)
        train_seconds += time.perf_counter() - start
        step += 1
        if train_seconds >= check_times[0]:
            check_times.pop(0)
            calibrate(trainer)
            curve.append((round(train_seconds, 1), step, round(test_rays.psnr(trainer.pipeline.model), 3)))
            print(f"  {label}: {curve[-1][0]:7.1f} s, step {step:5d}, test-ray PSNR {curve[-1][2]:.2f}", flush=True)
    reached = next((seconds for seconds, _, value in curve if value >= target), None)
    result = {"run": label, "steps": step, "train_seconds": round(train_seconds, 1),
              "rays_per_s": round(step * rays_per_step / train_seconds, 1), "time_to_target_s": reached,
              "curve": curve, **test_metrics(trainer.pipeline)}
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    return result


def compare_speed(configs, scene: Path, output: Path, steps: int, rays: int, samples: int) -> dict:
    """Rays/s of bn-nerf (BN on and off) and vanilla-nerf at the same rays and samples per step."""
    import torchmetrics.image.lpip as lpip_module

    from nerfstudio.configs.method_configs import method_configs

    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda **_: None  # offline: no AlexNet download
    candidates = {"vanilla-nerf": copy.deepcopy(method_configs["vanilla-nerf"])}
    for normalization in ("batch", "none"):
        config = copy.deepcopy(configs["bn-nerf"])
        config.pipeline.model.normalization = normalization
        candidates[f"bn-nerf normalization={normalization}"] = config
    trainers = {}
    for name, config in candidates.items():
        config.pipeline.model.num_coarse_samples = samples
        config.pipeline.model.num_importance_samples = samples
        config.pipeline.datamanager.train_num_rays_per_batch = rays
        trainers[name] = make_trainer(config, scene, output)
        trainers[name].pipeline.train()
        trainers[name].train_iteration(0)  # warm-up
    seconds = dict.fromkeys(trainers, 0.0)
    for step in range(1, steps + 1):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_iteration(step)
            seconds[name] += time.perf_counter() - start
    speed = {name: round(steps * rays / total, 1) for name, total in seconds.items()}
    speed["ratio_bn_to_vanilla"] = round(speed["bn-nerf normalization=batch"] / speed["vanilla-nerf"], 3)
    speed["settings"] = f"{rays} rays/step, {samples}+{samples} samples, {steps} alternating steps each"
    print(json.dumps(speed), flush=True)
    return speed


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), platform.processor())
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    return {"cpu": model, "torch_threads": torch.get_num_threads(), "load_average_1_5_15": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, default=Path("data/bench-scene"))
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark-nerf"))
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per run")
    parser.add_argument("--checks", type=int, default=6, help="PSNR checks per run, at budget/2^k seconds")
    parser.add_argument("--target-psnr", type=float, default=20.0)
    parser.add_argument("--methods", default="bn-nerf-cpu,bn-diner-cpu", help="comma-separated presets")
    parser.add_argument("--speed-steps", type=int, default=5, help="timed steps per method in the vanilla-nerf comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest on a shared 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.scene / "transforms_test.json").exists():
        write_scene(args.scene, size=args.size)
    configs = discover_methods()[0]
    started = time.perf_counter()
    report = {"machine_at_start": machine(), "budget_s": args.budget, "target_psnr": args.target_psnr, "runs": []}
    for method in args.methods.split(","):
        for normalization in ("none", "batch"):
            config = copy.deepcopy(configs[method])
            config.pipeline.model.normalization = normalization
            label = f"{method} normalization={normalization}"
            report["runs"].append(run(label, config, args.scene, args.output, args.budget, args.checks, args.target_psnr))
    report["speed"] = compare_speed(configs, args.scene, args.output, args.speed_steps, rays=256, samples=32)
    report["machine_at_end"] = machine()
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2))
    print(f"wall time {report['wall_seconds']} s; results in {args.output / 'results.json'}")


if __name__ == "__main__":
    main()
