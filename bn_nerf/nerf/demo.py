"""`bn-nerf-demo`: the README's main job on a fresh machine, without downloads or a GPU.

1. writes the embedded procedural scene (bn_nerf.nerf.data.scene) unless it is already there;
2. trains a CPU preset with nerfstudio's own training loop (the run ns-train would make: config.yml,
   checkpoints whose BN statistics are re-estimated at save time, tensorboard logs);
3. loads the final checkpoint the way ns-eval does and reports test PSNR/SSIM in eval mode, i.e.
   with BN's running statistics, as the checkpoint deploys;
4. renders a camera that is in none of the scene's splits and saves it as a PNG beside the
   ray-traced truth for that camera, with its PSNR. No ffmpeg is needed (ns-render's video path
   needs it) and no viewer is started unless asked.

The run folder it prints loads in `ns-eval`, `ns-render` and `ns-viewer`.

The console holds one progress bar (steps, elapsed time, ETA) and a summary of what was measured
and where it was written; nerfstudio's own output (set-up, its step table, checkpoints) goes to
`train.log` in the output folder, and the known upstream deprecation warnings are silenced
(bn_nerf/upstream_warnings.py, installed on importing bn_nerf.nerf), so a warning that does reach
the console is news: ours, or one nobody has looked at yet.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


METHODS = ("bn-diner-cpu", "bn-nerf-cpu")
# Steps for a run of under five minutes end to end on 2 quiet CPU cores (see BENCHMARKS.md "NeRF"
# for the measurement behind each figure). Change with --steps.
DEFAULT_STEPS = {"bn-diner-cpu": 2200, "bn-nerf-cpu": 2000}
# A viewpoint outside the scene's camera set: azimuth and elevation in degrees.
NOVEL_VIEW = (37.0, 33.0)


def novel_camera(size: int):
    """A nerfstudio camera of the scene's intrinsics at NOVEL_VIEW, and its ray-traced RGBA truth."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from bn_nerf.nerf.data.scene import CAMERA_ANGLE_X, CAMERA_DISTANCE, look_at_pose, render_view

    azimuth, elevation = (math.radians(angle) for angle in NOVEL_VIEW)
    position = CAMERA_DISTANCE * np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )
    pose = look_at_pose(position)
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    camera = Cameras(
        camera_to_worlds=torch.from_numpy(pose[:3, :4]).float()[None],
        fx=focal,
        fy=focal,
        cx=size / 2,
        cy=size / 2,
        width=size,
        height=size,
        camera_type=CameraType.PERSPECTIVE,
    )
    return camera, render_view(pose, size)


def progress_bar(console: Console) -> Progress:
    """Training's one progress bar: steps done, elapsed time and the ETA at the pace so far. Text that
    reaches stderr while it runs (a warning) is printed above it, not through it."""
    return Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, redirect_stdout=False)


def train(method: str, normalization: str, scene: Path, output: Path, steps: int, threads: int | None,
          viewer: bool, console: Console, log: TextIO) -> Path:
    """nerfstudio's training loop on the method's registered configuration, its output written to
    `log` and its progress drawn on `console`; returns config.yml."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from nerfstudio.plugins.registry import discover_methods
    from nerfstudio.scripts.train import _set_random_seed

    config = copy.deepcopy(discover_methods()[0][method])
    config.pipeline.datamanager.data = scene
    config.pipeline.model.normalization = normalization
    config.output_dir = output
    config.max_num_iterations = steps
    # None: the trainer measures one thread against every core, as for ns-train (bn_nerf.nerf.engine.trainer).
    config.threads = threads
    for group in config.optimizers.values():
        if group["scheduler"] is not None:  # decay over this run, not over the preset's length
            group["scheduler"].max_steps = steps
    config.vis = "viewer" if viewer else "tensorboard"
    config.viewer.quit_on_train_completion = True  # the report follows training; ns-viewer reopens the run
    # Test metrics come once, from the saved checkpoint; periodic eval renders would only cost time.
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = steps + 1
    # Its step table one line per report, not redrawn in place with cursor moves: it goes to a file.
    config.logging.local_writer.max_log_size = 0
    with contextlib.redirect_stdout(log):  # nerfstudio prints to stdout, through print and its rich CONSOLE
        config.set_timestamp()
        config.save_config()
        # nerfstudio's train_loop, with the progress bar's callback added between set-up and training.
        _set_random_seed(config.machine.seed)
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
    if viewer:
        for line in trainer.viewer_state.viewer_info:
            console.print(line)
    with progress_bar(console) as progress:
        task = progress.add_task("training", total=steps)
        trainer.callbacks.append(TrainingCallback(
            [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
            lambda step: progress.update(task, completed=step + 1)))
        with contextlib.redirect_stdout(log):
            trainer.train()
    return config.get_base_dir() / "config.yml"


def evaluate(config_path: Path, output: Path, size: int) -> dict:
    """Test metrics and the novel view from the saved checkpoint, loaded as ns-eval loads it."""
    from nerfstudio.utils.eval_utils import eval_setup

    from bn_nerf.nerf.model_components.metrics import image_metrics

    _, pipeline, _, step = eval_setup(config_path, test_mode="test")  # eval mode: BN running statistics
    test = pipeline.get_average_eval_image_metrics()
    camera, truth_rgba = novel_camera(size)
    rendered = pipeline.model.get_outputs_for_camera_ray_bundle(camera.generate_rays(camera_indices=0, keep_shape=True))
    image = rendered["rgb"].clamp(0, 1)
    truth_rgba = torch.from_numpy(truth_rgba).float()
    # On white, as the Blender parser composites the training images and the model renders.
    truth = truth_rgba[..., :3] * truth_rgba[..., 3:] + (1 - truth_rgba[..., 3:])
    novel = image_metrics(image, truth)
    novel_path = output / "novel_view.png"
    side_by_side = torch.cat([truth, image], dim=1)
    Image.fromarray((side_by_side.numpy() * 255).round().astype(np.uint8)).save(output / "novel_view_vs_truth.png")
    Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(novel_path)
    return {
        "step": step,
        "test_psnr": test["psnr"],
        "test_ssim": test["ssim"],
        "test_images": len(pipeline.datamanager.eval_dataset),
        "novel_view_psnr": novel["psnr"],
        "novel_view_ssim": novel["ssim"],
        "novel_view": str(novel_path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bn-nerf-demo",
        description="Write the embedded scene, train a CPU preset of bn-nerf or bn-diner on it, report test PSNR/SSIM "
        "in eval mode and save a rendered novel view. Leaves a run that ns-eval, ns-render and ns-viewer load.",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/bn-nerf-demo"), help="folder for the scene and the run")
    parser.add_argument("--method", choices=METHODS, default="bn-diner-cpu")
    parser.add_argument("--normalization", choices=("batch", "none"), default="batch", help="none: the BN-off baseline")
    parser.add_argument("--steps", type=int, help="training steps (default: about four CPU minutes for the method)")
    parser.add_argument("--size", type=int, default=100, help="image size of the generated scene (default 100)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: every core, unless a short probe measures one thread "
                             "clearly faster)")
    parser.add_argument("--viewer", action="store_true", help="serve nerfstudio's viewer while training")
    args = parser.parse_args(argv)
    steps = DEFAULT_STEPS[args.method] if args.steps is None else args.steps
    if steps < 1 or (args.threads is not None and args.threads < 1) or args.size < 8:
        print("bn-nerf-demo: error: --steps and --threads must be positive and --size at least 8", file=sys.stderr)
        return 2

    from bn_nerf.nerf.data.scene import write_scene

    started = time.perf_counter()
    # Bound to this stdout now: while nerfstudio's output is redirected to the log, the bar and the
    # summary still reach the user. Plain text: paths are neither styled, read as markup nor wrapped.
    console = Console(file=sys.stdout, markup=False, highlight=False, soft_wrap=True)
    args.output.mkdir(parents=True, exist_ok=True)
    log_path = args.output / "train.log"
    scene = args.output / "scene"
    console.print(f"bn-nerf-demo: {args.method} (normalization={args.normalization}), {steps} steps on the embedded "
                  f"scene in {scene}; nerfstudio's log: {log_path}")
    if not (scene / "transforms_test.json").is_file():
        write_scene(scene, size=args.size)
    with log_path.open("w") as log:
        config_path = train(args.method, args.normalization, scene, args.output / "runs", steps, args.threads,
                            args.viewer, console, log)
        trained = time.perf_counter()
        console.print("evaluating the checkpoint on the test views and the novel view (eval mode) ...")
        with contextlib.redirect_stdout(log):
            report = evaluate(config_path, args.output, args.size)
    report.update(
        method=args.method,
        normalization=args.normalization,
        config=str(config_path),
        log=str(log_path),
        seconds_to_trained=round(trained - started, 1),
        total_seconds=round(time.perf_counter() - started, 1),
    )
    report_path = args.output / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    console.print(summary(report, steps, report_path, args.output / "eval.json"))
    return 0


def summary(report: dict, steps: int, report_path: Path, eval_path: Path) -> str:
    """What the run measured and where it wrote it, in a few lines."""
    minutes, seconds = divmod(round(report["total_seconds"]), 60)
    novel_view = Path(report["novel_view"])
    return "\n".join([
        f"{report['method']} (normalization={report['normalization']}), {steps} steps: {minutes} min {seconds} s in all",
        f"  test views ({report['test_images']}, eval mode): PSNR {report['test_psnr']:.2f} dB, SSIM {report['test_ssim']:.3f}",
        f"  novel view: PSNR {report['novel_view_psnr']:.2f} dB -> {novel_view} "
        f"(beside its truth: {novel_view.with_name('novel_view_vs_truth.png').name})",
        f"  figures: {report_path}; nerfstudio's log: {report['log']}",
        f"  ns-eval --load-config {report['config']} --output-path {eval_path}",
        f"  ns-viewer --load-config {report['config']}",
    ])


if __name__ == "__main__":
    sys.exit(main())
