"""Rendering speed and memory of a trained run, as ns-eval and the viewer render it.

    python scripts/benchmark_render.py --load-config outputs/fox/bn-diner-cpu/<time>/config.yml \
        --output results/benchmark-render/fox-bn-diner-cpu.json
    PYTHONPATH=<a checkout of an older commit> python scripts/benchmark_render.py ... --label before

Loads the run as ns-eval does (nerfstudio's eval_setup: the checkpoint, eval mode, the eval split),
then renders --views eval views through the model's own camera path (`get_outputs_for_camera`, what
ns-eval and ns-render call) and --previews 256-pixel-wide previews of the first training camera (the
viewer's preview size), each timed alone. It reports rays per second, each view's PSNR against its
photo, and the process's peak RSS. `--set NAME=VALUE` overrides a model option for the run (e.g.
`--set eval_min_transmittance=0` composites every sample). Results are appended to --output (one JSON
record a call), with the CPU's name and the thread count, so that runs of two code versions on one
machine are compared in one file.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from nerfstudio.utils.eval_utils import eval_setup

PREVIEW_WIDTH = 256


def parse_override(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    return name, json.loads(value)


def psnr(rendered: torch.Tensor, photo: torch.Tensor) -> float:
    return float(-10 * torch.log10(((rendered - photo) ** 2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--views", type=int, default=3, help="eval views rendered (from the first)")
    parser.add_argument("--previews", type=int, default=3, help="256-pixel-wide previews rendered")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, every core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], type=parse_override,
                        help="NAME=VALUE (JSON) model option for this run")
    parser.add_argument("--label", default="")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    _, pipeline, _, _ = eval_setup(args.load_config, test_mode="test")
    model = pipeline.model
    for name, value in args.overrides:
        setattr(model.config, name, value)
    dataset = pipeline.datamanager.eval_dataset
    views = []
    for index in range(min(args.views, len(dataset))):
        camera = dataset.cameras[index:index + 1].to(pipeline.device)
        started = time.perf_counter()
        outputs = model.get_outputs_for_camera(camera)
        seconds = time.perf_counter() - started
        photo = model.renderer_rgb.blend_background(dataset[index]["image"].to(outputs["rgb"].device))
        rays = outputs["rgb"].shape[0] * outputs["rgb"].shape[1]
        views.append({"rays": rays, "seconds": seconds, "psnr": psnr(outputs["rgb"], photo)})
        print(f"view {index}: {rays} rays in {seconds:.2f} s ({rays / seconds:,.0f} rays/s), "
              f"PSNR {views[-1]['psnr']:.3f} dB", flush=True)
    previews = []
    preview_camera = pipeline.datamanager.train_dataset.cameras[0:1].to(pipeline.device)
    preview_camera.rescale_output_resolution(PREVIEW_WIDTH / float(preview_camera.width))
    for _ in range(args.previews):
        started = time.perf_counter()
        outputs = model.get_outputs_for_camera(preview_camera)
        previews.append(time.perf_counter() - started)
        print(f"preview {tuple(outputs['rgb'].shape[:2])}: {previews[-1]:.2f} s", flush=True)
    rays = sum(view["rays"] for view in views)
    seconds = sum(view["seconds"] for view in views)
    record = {
        "label": args.label,
        "config": str(args.load_config),
        "overrides": dict(args.overrides),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "unknown CPU"),
        "threads": torch.get_num_threads(),
        "views": views,
        "rays_per_second": rays / seconds if seconds else None,
        "mean_psnr": sum(view["psnr"] for view in views) / len(views) if views else None,
        "preview_seconds": previews,
        "preview_frames_per_second": len(previews) / sum(previews) if previews else None,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(json.dumps({key: record[key] for key in ("label", "rays_per_second", "mean_psnr",
                                                    "preview_frames_per_second", "peak_rss_gb")}))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
