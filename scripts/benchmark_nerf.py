"""NeRF methods at equal training time on the CPU: BN-DINER, DINER, BN-NeRF, vanilla-nerf, nerfacto.

    python scripts/benchmark_nerf.py --scene data/lego-100 --scene data/bn-nerf-scene --minutes 2 5 10

All methods of a scene train in ONE process, one torch thread, interleaved step by step -- the method
with the least training time so far takes the next step -- so that the shared CPU's load falls on
all of them alike. Checks at each of --minutes of a method's own training time (checks and grid
evaluation excluded) measure PSNR in eval mode on the same fixed random sample of test-split pixels
for every method (BN statistics re-estimated first, as a checkpoint gets them). Steps are nerfstudio's
own (`Trainer.train_iteration` with the training callbacks).

Methods (labels):
  BN-DINER       bn-diner-cpu
  DINER          bn-diner-cpu --pipeline.model.normalization none
  BN-NeRF        bn-nerf-cpu
  vanilla-nerf   nerfstudio's vanilla-nerf (its LPIPS, which downloads weights, left out of the process)
  nerfacto       nerfstudio's nerfacto set for Blender: white background, no scene contraction, near 2,
                 far 6, camera optimizer off (poses are exact), Blender data parser, the synchronous
                 data manager (nerfacto's parallel one would prepare batches in a second process, outside
                 the interleaving)
  instant-ngp    needs nerfacc's CUDA kernels: reported as not run where there is no CUDA
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

from bn_nerf.nerf.engine.budget import TrainingRecord, method_config, setup_trainer, train
from bn_nerf.nerf.engine.trainer import BatchNormTrainer
from bn_nerf.nerf.model_components.metrics import psnr
from bn_nerf.runtime import cpu_model

CHECK_PIXELS = 8192
METHODS = ("BN-DINER", "DINER", "BN-NeRF", "vanilla-nerf", "nerfacto", "instant-ngp")


def configured(label: str):
    """The registered configuration behind a label, set as the module docstring says."""
    if label in ("BN-DINER", "DINER"):
        config = method_config("bn-diner-cpu")
        config.pipeline.model.normalization = "batch" if label == "BN-DINER" else "none"
    elif label == "BN-NeRF":
        config = method_config("bn-nerf-cpu")
    elif label == "vanilla-nerf":
        import torchmetrics.image.lpip as lpip_module

        lpip_module.LearnedPerceptualImagePatchSimilarity = lambda **_: None  # offline: no AlexNet download
        config = method_config("vanilla-nerf")
    elif label == "nerfacto":
        config = method_config("nerfacto")
        model = config.pipeline.model
        model.background_color = "white"
        model.disable_scene_contraction = True
        model.near_plane, model.far_plane = 2.0, 6.0
        model.camera_optimizer.mode = "off"
        config.pipeline.datamanager = VanillaDataManagerConfig(
            dataparser=BlenderDataParserConfig(),
            train_num_rays_per_batch=config.pipeline.datamanager.train_num_rays_per_batch,
            eval_num_rays_per_batch=config.pipeline.datamanager.eval_num_rays_per_batch,
        )
    else:
        raise ValueError(label)
    return config


class TestPixels:
    """A fixed random sample of test-split pixels, the same for every method of a scene."""

    def __init__(self, pipeline, count: int):
        dataset = pipeline.datamanager.eval_dataset
        coords = dataset.cameras.get_image_coords().reshape(-1, 2)
        generator = torch.Generator().manual_seed(0)
        self.cameras = torch.randint(len(dataset), (count,), generator=generator)
        pixel_indices = torch.randint(len(coords), (count,), generator=generator)
        self.coords = coords[pixel_indices]
        self.dataset = dataset
        images = torch.stack([dataset[index]["image"].reshape(-1, dataset[index]["image"].shape[-1])
                              for index in range(len(dataset))])
        self.pixels = images[self.cameras, pixel_indices]  # RGBA: composited per model below

    @torch.no_grad()
    def psnr(self, trainer) -> dict:
        if isinstance(trainer, BatchNormTrainer):
            trainer.calibrate_batchnorm(0)
        model = trainer.pipeline.model
        model.eval()
        try:
            rays = self.dataset.cameras.generate_rays(camera_indices=self.cameras[:, None], coords=self.coords)
            outputs = model.get_outputs_for_camera_ray_bundle(rays.reshape((len(self.coords), 1)))
            # vanilla-nerf names its levels only; its answer is the fine one.
            rendered = outputs.get("rgb", outputs.get("rgb_fine")).reshape(-1, 3)
            truth = model.renderer_rgb.blend_background(self.pixels, background_color="white")
            return {"test_pixel_psnr": round(float(psnr(rendered, truth)), 2)}
        finally:
            model.train()


def machine() -> dict:
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    return {"cpu": cpu_model(), "cores": torch.get_num_threads(), "load_average_1_5_15": load}


def benchmark_scene(scene: Path, labels: list[str], minutes: list[float], output: Path) -> dict:
    budgets = [60.0 * m for m in sorted(minutes)]
    runnable = [label for label in labels if label != "instant-ngp" or torch.cuda.is_available()]
    trainers = {label: setup_trainer(configured(label), scene, output / label, "cpu") for label in runnable}
    pixels = TestPixels(next(iter(trainers.values())).pipeline, CHECK_PIXELS)
    records = {label: TrainingRecord() for label in runnable}
    while any(records[label].seconds < budgets[-1] for label in runnable):
        label = min(runnable, key=lambda name: records[name].seconds)
        record = records[label]
        checks_before = len(record.checks)
        train(trainers[label], steps=record.steps + 1, check_at=tuple(b for b in budgets if b > record.seconds),
              on_check=lambda trainer, _record: pixels.psnr(trainer), record=record)
        for check in record.checks[checks_before:]:
            print(f"  {scene.name} {label}: {check}", flush=True)
    rows = {label: {"steps": record.steps, "seconds": round(record.seconds, 1), "checks": record.checks}
            for label, record in records.items()}
    for label in labels:
        if label not in rows:
            rows[label] = {"not_run": "needs CUDA (nerfacc's kernels and tiny-cuda-nn); this machine has none"}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, action="append", required=True, help="Blender-format scene (repeatable)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10], help="training-time checks per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark-nerf"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    report = {"machine_at_start": machine(), "minutes": args.minutes, "check_pixels": CHECK_PIXELS, "scenes": {}}
    for scene in args.scene:
        report["scenes"][scene.name] = benchmark_scene(scene, args.methods, args.minutes, args.output / scene.name)
    report["machine_at_end"] = machine()
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
