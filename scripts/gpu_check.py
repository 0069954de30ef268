"""GPU readiness of the NeRF plugin, in under 8 minutes on one CUDA GPU; prints one table.

    python scripts/gpu_check.py                  # on a CUDA machine
    python scripts/gpu_check.py --smoke          # the same checks, shrunk, on any device (the test suite runs this)

First, on CUDA: the suite's CUDA test (tests/test_nerf_plugin.py, SyncBatchNorm trains a step in a
one-process NCCL group) and the CPU tests of BatchNorm and training across processes
(tests/test_nerf_distributed.py), through pytest; their outcome is the SyncBatchNorm row's `pytest`.

Checks: bn-diner and its BN-off twin (DINER) for a fixed number of steps on a generated 400x400 scene,
with the occupancy grid marched by nerfacc's CUDA kernel where it loads; bn-nerf (the paper's 8x256
field) behind the same occupancy grid, with BN and without, for a fixed number of steps; a few hundred
steps of bn-nerf's hierarchical (vanilla-nerf) sampler;
which backend runs DINER's table (tiny-cuda-nn if it imports, else torch, and the table says so);
BatchNorm -> SyncBatchNorm conversion, and on CUDA one synchronized training step in a one-process group.
Each row names the device (the card's name on CUDA), steps, steps/s and the eval-mode test PSNR.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bn_nerf.nerf.data.scene import write_scene
from bn_nerf.nerf.engine.budget import method_config, setup_trainer, test_metrics, train


ROOT = Path(__file__).resolve().parents[1]
# The multi-device path's tests: the CUDA one is skipped wherever CUDA is absent, so it runs here first.
DISTRIBUTED_TESTS = ["tests/test_nerf_plugin.py::test_syncbatchnorm_model_trains_a_step_on_cuda",
                     "tests/test_nerf_distributed.py"]


def distributed_tests() -> str:
    """pytest's summary line for DISTRIBUTED_TESTS (e.g. '5 passed in 41.20s')."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DISTRIBUTED_TESTS],
                            cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else f"pytest exited {result.returncode}: {result.stderr[-300:]}"


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "CPU"


def radiance_run(label: str, method: str, normalization: str, steps: int, scene: Path, output: Path, device: str,
                 shrink: dict, rays: int | None, sampler: str | None = None) -> dict:
    config = method_config(method)
    config.pipeline.model.normalization = normalization
    if sampler is not None:
        config.pipeline.model.sampler = sampler
    for name, value in shrink.items():
        setattr(config.pipeline.model, name, value)
    if rays is not None:
        config.pipeline.datamanager.train_num_rays_per_batch = rays
    trainer = setup_trainer(config, scene, output, device)
    record = train(trainer, steps=steps)
    model = trainer.pipeline.model
    metrics = test_metrics(trainer)
    row = {"check": label, "steps": record.steps, "steps_per_s": round(record.steps / record.seconds, 2),
           "test_psnr": round(metrics["psnr"], 2), "test_ssim": round(metrics["ssim"], 3)}
    if hasattr(model, "occupancy_grid"):
        if hasattr(model.field.position_encoding, "backend"):
            row["table"] = model.field.position_encoding.backend
        row["rays_marched_by"] = model.occupancy_grid.marcher
        row["occupied"] = round(model.occupancy_grid.occupied_fraction, 3)
    return row


def sync_batchnorm_check(device: str, pytest_summary: str | None) -> dict:
    """Conversion keeps the checkpoint's keys; on CUDA, one step trains in a one-process group, and the
    distributed tests' pytest summary (run first)."""
    from bn_nerf.nerf.fields.radiance_field import make_nerf_field
    from bn_nerf.networks import convert_to_sync_batchnorm

    field = make_nerf_field(trunk_depth=2, trunk_width=32, skip_connections=(), colour_depth=1, colour_width=16)
    keys = set(field.state_dict())
    field = convert_to_sync_batchnorm(field)
    layers = [m for m in field.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    converted = bool(layers) and all(isinstance(m, torch.nn.SyncBatchNorm) for m in layers) and set(field.state_dict()) == keys
    row = {"check": "SyncBatchNorm", "converted_layers": len(layers), "keys_unchanged": converted}
    if pytest_summary is not None:
        row["pytest"] = pytest_summary
    if device == "cuda":
        import torch.distributed as dist
        from nerfstudio.cameras.rays import Frustums, RaySamples

        with tempfile.TemporaryDirectory() as rendezvous:
            dist.init_process_group("nccl", init_method=f"file://{rendezvous}/store", rank=0, world_size=1)
            try:
                field = field.cuda().train()
                count = 4096
                positions = torch.rand(count, 3, device="cuda") * 2 - 1
                samples = RaySamples(frustums=Frustums(
                    origins=positions, directions=torch.nn.functional.normalize(torch.randn(count, 3, device="cuda"), dim=-1),
                    starts=torch.zeros(count, 1, device="cuda"), ends=torch.zeros(count, 1, device="cuda"),
                    pixel_area=torch.ones(count, 1, device="cuda")))
                outputs = field(samples)
                loss = sum(value.square().mean() for value in outputs.values())
                loss.backward()
                row["synced_step_finite"] = bool(torch.isfinite(loss))
            finally:
                dist.destroy_process_group()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="shrunk checks on any device (CPU included)")
    parser.add_argument("--output", type=Path, default=Path("outputs/gpu-check"))
    parser.add_argument("--diner-steps", type=int, default=3000)
    parser.add_argument("--nerf-steps", type=int, default=2000, help="steps of bn-nerf with its occupancy sampler")
    parser.add_argument("--hierarchical-steps", type=int, default=300, help="steps of bn-nerf's hierarchical sampler")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu_check: error: no CUDA GPU here; --smoke runs the shrunk checks on the CPU", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()
    # The one check of the multi-device path on a GPU, before anything else can fail: a minute of pytest.
    pytest_summary = distributed_tests() if cuda else None
    scene = args.output / "scene"
    if args.smoke:
        write_scene(scene, size=16, views={"train": 4, "val": 1, "test": 1})
        diner_steps, nerf_steps, hierarchical_steps, rays = 3, 3, 2, 256
        grid = dict(occupancy_resolution=16, render_step_size=0.05)
        diner_shrink = dict(table_resolution=16, log2_table_entries=14, trunk_width=16, colour_width=16,
                            batchnorm_calibration_rays=512, **grid)
        nerf_shrink = dict(trunk_depth=2, trunk_width=32, skip_connections=(1,), colour_depth=1, colour_width=16,
                           num_coarse_samples=8, num_importance_samples=8, batchnorm_calibration_rays=512, **grid)
    else:
        write_scene(scene, size=400, views={"train": 100, "val": 5, "test": 10})
        diner_steps, nerf_steps, hierarchical_steps = args.diner_steps, args.nerf_steps, args.hierarchical_steps
        diner_shrink, nerf_shrink, rays = {}, {}, None
    runs = args.output / "runs"
    rows = [
        radiance_run("bn-diner (BN)", "bn-diner", "batch", diner_steps, scene, runs, device, diner_shrink, rays),
        radiance_run("DINER (BN off)", "bn-diner", "none", diner_steps, scene, runs, device, diner_shrink, rays),
        radiance_run("bn-nerf occupancy (BN)", "bn-nerf", "batch", nerf_steps, scene, runs, device, nerf_shrink, rays,
                     sampler="occupancy"),
        radiance_run("NeRF occupancy (BN off)", "bn-nerf", "none", nerf_steps, scene, runs, device, nerf_shrink, rays,
                     sampler="occupancy"),
        radiance_run("bn-nerf hierarchical (BN)", "bn-nerf", "batch", hierarchical_steps, scene, runs, device,
                     nerf_shrink, rays, sampler="hierarchical"),
        sync_batchnorm_check(device, pytest_summary),
    ]
    try:
        import tinycudann  # noqa: F401

        tcnn = "tinycudann imports"
    except ImportError:
        tcnn = "tinycudann does not import: DINER's table ran in torch"
    report = {"device": device_name(device), "torch": torch.__version__, "tcnn": tcnn, "rows": rows,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"device: {report['device']}  torch {report['torch']}  {tcnn}")
    columns = sorted({key for row in rows for key in row} - {"check"}, key=lambda key: (key not in ("steps", "steps_per_s"), key))
    print(" | ".join(["check", *columns]))
    for row in rows:
        print(" | ".join([row["check"], *(str(row.get(key, "")) for key in columns)]))
    print(f"wall time {report['wall_seconds']} s -> {args.output / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
