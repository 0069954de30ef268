"""Our CPU presets against nerfstudio's nerfacto on real captures, at equal training time.

    python scripts/benchmark_captures.py --scene /data/fox --downscale-factor 4 --minutes 2 5 10
    python scripts/benchmark_captures.py --scene /data/fern --minutes 2 5 10 --output results/benchmark-captures

Every method of a scene reads it through the methods' own parser (the format recognised from the
folder, its extent derived from the data), so all see the same frames, normalization and eval split.
They train in ONE process, one torch thread, interleaved step by step -- the method with the least
training time so far takes the next step -- so that the shared CPU's load falls on all of them alike.
At each of --minutes of a method's own training time (checks excluded) the run's checkpoint is saved
(after the BatchNorm re-estimation every checkpoint gets) and its PSNR measured in eval mode on the
same fixed random sample of eval-split pixels for every method (scripts/benchmark_nerf.py's check: a
whole eval split of these captures takes this CPU tens of minutes a method). The last check also
writes each method's render of the first eval image beside the photo, and `--ns-eval` afterwards
runs `ns-eval` on each method's last checkpoint: PSNR and SSIM over the whole eval split.

Methods (labels):
  BN-DINER   bn-diner-cpu
  DINER      bn-diner-cpu --pipeline.model.normalization none
  BN-NeRF    bn-nerf-cpu
  NeRF       bn-nerf-cpu --pipeline.model.normalization none with README's rates for it (3e-3 -> 3e-5)
  nerfacto   nerfstudio's nerfacto set for a CPU: 1,024 rays a step, camera optimizer off, the
             synchronous data manager (its parallel one would prepare batches in a second process,
             outside the interleaving); its own scene contraction, proposal sampler, near and far.

Resumable: a scene whose results.json exists in its output folder is not trained again (`--ns-eval`
then evaluates what it has not evaluated yet).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig

from benchmark_nerf import CHECK_PIXELS, TestPixels

from bn_nerf.nerf.engine.budget import TrainingRecord, method_config, setup_trainer, train
from bn_nerf.runtime import cpu_model

METHODS = ("BN-DINER", "DINER", "BN-NeRF", "NeRF", "nerfacto")
# README's rates for bn-nerf-cpu without BN: its 1e-2 collapses one seed in three there.
NERF_WITHOUT_BN_LR = (3e-3, 3e-5)


def without_lpips() -> None:
    """nerfacto builds torchmetrics' LPIPS, which downloads AlexNet's weights: offline, this process
    (and the ns-eval this script starts) leaves LPIPS out, as the project's own metrics do."""
    import torchmetrics.image.lpip as lpip_module

    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda **_: (lambda *_: torch.tensor(float("nan")))


# ns-eval for a checkpoint of nerfacto under torch >= 2.6: its checkpoint holds a numpy scalar, which
# torch.load's weights_only default refuses (../REFERENCE: it does not load in ns-eval), and offline.
# ns-eval also replaces the saved data manager's class by the registered method's (nerfacto's parallel
# one), which cannot run on the synchronous manager's configuration this benchmark trained with: the
# registered nerfacto is given that manager here too.
NS_EVAL = """
import numpy, sys, torch
sys.path.insert(0, {scripts!r})
from benchmark_captures import without_lpips
without_lpips()
from nerfstudio.configs.method_configs import all_methods
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager
all_methods["nerfacto"].pipeline.datamanager._target = VanillaDataManager
from numpy.core.multiarray import scalar
torch.serialization.add_safe_globals([scalar, numpy.dtype, numpy.dtypes.Float64DType])
from nerfstudio.scripts.eval import entrypoint
sys.argv = ["ns-eval", *sys.argv[1:]]
entrypoint()
"""


def configured(label: str, downscale_factor: int | None):
    """The registered configuration behind a label, set as the module docstring says."""
    ours = method_config("bn-diner-cpu" if "DINER" in label else "bn-nerf-cpu")
    parser = ours.pipeline.datamanager.dataparser
    if downscale_factor is not None:
        parser.downscale_factor = downscale_factor
    if label in ("DINER", "NeRF"):
        ours.pipeline.model.normalization = "none"
    if label == "NeRF":
        optimizer = ours.optimizers["fields"]
        optimizer["optimizer"].lr, optimizer["scheduler"].lr_final = NERF_WITHOUT_BN_LR
    if label != "nerfacto":
        return ours
    without_lpips()
    config = method_config("nerfacto")
    config.pipeline.model.camera_optimizer.mode = "off"
    # Its eval chunk of 32,768 rays (x 400 samples through torch hash grids) takes over 10 GB here.
    config.pipeline.model.eval_num_rays_per_chunk = 1024
    config.pipeline.datamanager = VanillaDataManagerConfig(
        dataparser=copy.deepcopy(parser), train_num_rays_per_batch=1024, eval_num_rays_per_batch=4096,
    )
    return config


def machine() -> dict:
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "load_average_1_5_15": load}


@torch.no_grad()
def render_beside_photo(trainer, path: Path) -> None:
    """The first eval image as the model renders it (eval mode), right of the photo."""
    pipeline = trainer.pipeline
    pipeline.eval()
    try:
        dataset = pipeline.datamanager.eval_dataset
        camera = dataset.cameras[0:1].to(pipeline.device)
        outputs = pipeline.model.get_outputs_for_camera(camera)
        photo = dataset[0]["image"][..., :3].cpu()
        render = outputs["rgb"].cpu().clamp(0, 1)
        side_by_side = torch.cat([photo, render], dim=1).numpy()
        Image.fromarray((side_by_side * 255).round().astype(np.uint8)).save(path)
    finally:
        pipeline.train()


def benchmark_scene(scene: Path, labels: list[str], minutes: list[float], output: Path,
                    downscale_factor: int | None) -> dict:
    budgets = [60.0 * m for m in sorted(minutes)]
    trainers = {label: setup_trainer(configured(label, downscale_factor), scene, output / label, "cpu")
                for label in labels}
    for trainer in trainers.values():
        trainer.config.save_config()  # the config.yml ns-eval loads the run's checkpoints with
    records = {label: TrainingRecord() for label in labels}
    pixels = TestPixels(next(iter(trainers.values())).pipeline, CHECK_PIXELS)

    def judge(label: str, trainer, record: TrainingRecord) -> dict:
        trainer.save_checkpoint(record.steps)  # re-estimates BN first: the checkpoint ns-eval reads
        if record.seconds >= budgets[-1]:
            render_beside_photo(trainer, output / f"{label}-eval0.png")
        return pixels.psnr(trainer)

    while any(records[label].seconds < budgets[-1] for label in labels):
        label = min(labels, key=lambda name: records[name].seconds)
        record = records[label]
        checks_before = len(record.checks)
        train(trainers[label], steps=record.steps + 1, check_at=tuple(b for b in budgets if b > record.seconds),
              on_check=lambda trainer, record, label=label: judge(label, trainer, record), record=record)
        for check in record.checks[checks_before:]:
            print(f"  {scene.name} {label}: {check}", flush=True)
    return {label: {"steps": record.steps, "seconds": round(record.seconds, 1), "checks": record.checks,
                    "run_folder": str(trainers[label].base_dir)}
            for label, record in records.items()}


def evaluate_last_checkpoints(results: Path) -> None:
    """ns-eval (PSNR, SSIM over the whole eval split) on each method's last checkpoint, recorded in
    results.json as it finishes, so that an interrupted evaluation resumes at the next method."""
    report = json.loads(results.read_text())
    for label, row in report["methods"].items():
        if "ns_eval" in row:
            continue
        evaluation = Path(row["run_folder"]) / "ns-eval.json"
        subprocess.run([sys.executable, "-c", NS_EVAL.format(scripts=str(Path(__file__).parent)),
                        "--load-config", str(Path(row["run_folder"]) / "config.yml"), "--output-path", str(evaluation)],
                       check=True)
        metrics = json.loads(evaluation.read_text())["results"]
        row["ns_eval"] = {key: round(metrics[key], 4) for key in ("psnr", "ssim", "lpips") if key in metrics}
        results.write_text(json.dumps(report, indent=2))
        print(f"  {label}: {row['ns_eval']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="a capture folder (any format the methods read)")
    parser.add_argument("--downscale-factor", type=int, default=None, help="read the folder's images_N")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10], help="training-time checks per method")
    parser.add_argument("--methods", nargs="+", default=["BN-DINER", "nerfacto"], choices=METHODS)
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark-captures"))
    parser.add_argument("--ns-eval", action="store_true", help="run ns-eval on each trained method's last checkpoint")
    args = parser.parse_args()
    output = args.output / args.scene.name
    results = output / "results.json"
    if args.ns_eval:
        evaluate_last_checkpoints(results)
        return
    if results.exists():
        print(f"{results}: trained already")
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    report = {"command": " ".join(["python scripts/benchmark_captures.py", f"--scene {args.scene.name}"]
                                  + ([f"--downscale-factor {args.downscale_factor}"] if args.downscale_factor else [])
                                  + ["--minutes", *map(str, args.minutes), "--methods", *args.methods]),
              "machine_at_start": machine(), "minutes": args.minutes, "check_pixels": CHECK_PIXELS}
    report["methods"] = benchmark_scene(args.scene, args.methods, args.minutes, output, args.downscale_factor)
    report["machine_at_end"] = machine()
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    results.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
