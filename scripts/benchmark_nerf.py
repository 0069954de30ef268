"""NeRF vs BN-NeRF and DINER vs BN-DINER at a fixed wall-clock budget on the generated scene, plus
bn-nerf's training speed against nerfstudio's vanilla-nerf at the same settings.

Reports per run: test PSNR/SSIM (eval mode, after the checkpoint-time BN re-estimation), train
rays/s, and the time at which the test PSNR first reached --target-psnr (checked every --eval-every s).

    python scripts/benchmark_nerf.py --scene data/bench-scene --budget 300 --target-psnr 20
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from nerfstudio.plugins.registry import discover_methods

from bn_nerf.nerf.metrics import image_metrics
from bn_nerf.nerf.scene import write_scene


def make_trainer(config, scene: Path, output: Path):
    config = copy.deepcopy(config)
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = output
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = 10**9
    config.pipeline.datamanager.data = scene
    config.set_timestamp()
    torch.manual_seed(0)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def test_metrics(pipeline) -> dict[str, float]:
    dataset = pipeline.datamanager.eval_dataset
    model = pipeline.model
    model.eval()
    scores = []
    for index in range(len(dataset)):
        rays = dataset.cameras.generate_rays(camera_indices=index)
        image = model.renderer_rgb.blend_background(dataset[index]["image"])
        scores.append(image_metrics(model.get_outputs_for_camera_ray_bundle(rays)["rgb_fine"], image))
    model.train()
    return {key: sum(s[key] for s in scores) / len(scores) for key in ("psnr", "ssim")}


def run(name: str, config, scene: Path, output: Path, budget: float, eval_every: float, target: float) -> dict:
    trainer = make_trainer(config, scene, output)
    rays_per_step = trainer.pipeline.datamanager.config.train_num_rays_per_batch
    train_seconds, step, reached, next_eval = 0.0, 0, None, eval_every
    while train_seconds < budget:
        start = time.perf_counter()
        trainer.train_iteration(step)
        train_seconds += time.perf_counter() - start
        step += 1
        if train_seconds >= next_eval:
            next_eval += eval_every
            trainer.save_checkpoint(step)  # re-estimates BN statistics, as a deployed checkpoint has them
            if reached is None and test_metrics(trainer.pipeline)["psnr"] >= target:
                reached = train_seconds
    trainer.save_checkpoint(step)
    result = {"method": name, "steps": step, "rays_per_s": step * rays_per_step / train_seconds,
              "time_to_target_s": reached, **test_metrics(trainer.pipeline)}
    print(result, flush=True)
    return result


def vanilla_nerf_rays_per_second(scene: Path, output: Path, steps: int, model_settings: dict) -> float:
    """nerfstudio's own vanilla-nerf, with its LPIPS (which would download weights) left out."""
    import torchmetrics.image.lpip as lpip_module

    from nerfstudio.configs.method_configs import method_configs

    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda **_: None  # offline: no AlexNet download
    config = copy.deepcopy(method_configs["vanilla-nerf"])
    for key, value in model_settings.items():
        setattr(config.pipeline.model, key, value)
    config.pipeline.datamanager.train_num_rays_per_batch = 256
    trainer = make_trainer(config, scene, output)
    return _rays_per_second(trainer, steps)


def _rays_per_second(trainer, steps: int) -> float:
    trainer.train_iteration(0)  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.train_iteration(step)
    return steps * trainer.pipeline.datamanager.config.train_num_rays_per_batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, default=Path("data/bench-scene"))
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark-nerf"))
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    parser.add_argument("--eval-every", type=float, default=60.0, help="training seconds between test evaluations")
    parser.add_argument("--target-psnr", type=float, default=20.0)
    parser.add_argument("--speed-steps", type=int, default=5, help="steps timed for the vanilla-nerf comparison")
    parser.add_argument("--device-scale", choices=("cpu", "paper"), default="cpu",
                        help="cpu: the -cpu presets; paper: bn-nerf / bn-diner at their full sizes")
    args = parser.parse_args()
    if not (args.scene / "transforms_train.json").exists():
        write_scene(args.scene, size=args.size)
    configs = discover_methods()[0]
    suffix = "-cpu" if args.device_scale == "cpu" else ""
    results = []
    for method in ("bn-nerf", "bn-diner"):
        for normalization in ("none", "batch"):
            config = copy.deepcopy(configs[method + suffix])
            config.pipeline.model.normalization = normalization
            label = f"{method}{suffix} normalization={normalization}"
            results.append(run(label, config, args.scene, args.output, args.budget, args.eval_every, args.target_psnr))

    # Speed at vanilla-nerf's own field size and the same samples and rays per step.
    settings = {"num_coarse_samples": 32, "num_importance_samples": 32}
    bn_config = copy.deepcopy(configs["bn-nerf"])
    for key, value in settings.items():
        setattr(bn_config.pipeline.model, key, value)
    bn_config.pipeline.datamanager.train_num_rays_per_batch = 256
    bn_rays = _rays_per_second(make_trainer(bn_config, args.scene, args.output), args.speed_steps)
    vanilla_rays = vanilla_nerf_rays_per_second(args.scene, args.output, args.speed_steps, settings)
    print({"bn_nerf_rays_per_s": bn_rays, "vanilla_nerf_rays_per_s": vanilla_rays, "ratio": bn_rays / vanilla_rays}, flush=True)


if __name__ == "__main__":
    main()
