"""The nerfstudio methods of this package (registered in pyproject.toml under the entry-point
group "nerfstudio.method_configs"). Every method takes `--pipeline.model.normalization none` to
become its own BN-off baseline, so a side-by-side run changes nothing else.

  bn-nerf       NeRF's field (8x256, PE 10/4) with BN in its MLPs, rendered through an occupancy grid
                with nerfacc's MLP-NeRF recipe (grid 128^3, step 0.005, Adam 5e-4 in steps to 50,000);
                `--pipeline.model.sampler hierarchical` is vanilla-nerf's coarse/fine sampling instead.
  bn-diner      DINER: a single-level table in front of a small BN MLP, rendered with an occupancy grid.
  bn-nerf-cpu   CPU-practical preset of bn-nerf: a smaller field behind a coarser grid (not the paper's).
  bn-diner-cpu  CPU-practical preset of bn-diner: a dense table, coarser marching, fewer rays.

Every method reads its `--data` folder through bn_nerf.nerf.data.dataparser, which recognises the format
(Blender, transforms.json, COLMAP, LLFF) and derives the scene's extent; the grid-rendered models take
their scene handling from it (a bounded box for Blender; contraction beyond the box, the data's near
and far, for a capture), so one preset serves both kinds of scene.
"""

from __future__ import annotations

from pathlib import Path

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.schedulers import MultiStepSchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from bn_nerf.nerf.data.dataparser import SceneDataParserConfig
from bn_nerf.nerf.data.formats.images import MAX_AUTO_RESOLUTION
from bn_nerf.nerf.engine.optimizers import FusedAdamOptimizerConfig
from bn_nerf.nerf.engine.pipelines import GlobalBatchPipelineConfig, SampleBudgetPipelineConfig
from bn_nerf.nerf.engine.schedulers import FloatExponentialDecaySchedulerConfig
from bn_nerf.nerf.engine.trainer import BatchNormTrainerConfig
from bn_nerf.nerf.models.diner_model import BNDINERModelConfig
from bn_nerf.nerf.models.nerf_model import BNNeRFModelConfig

DEFAULT_SCENE = "data/bn-nerf-scene"


def _nerfacc_mlp_nerf_optimizers(max_steps: int) -> dict:
    # nerfacc's MLP NeRF (examples/train_mlp_nerf.py): Adam 5e-4, times 0.33 at 1/2, 3/4, 5/6 and 9/10 of the run.
    milestones = tuple(max_steps * numerator // denominator for numerator, denominator in ((1, 2), (3, 4), (5, 6), (9, 10)))
    return {"fields": {"optimizer": FusedAdamOptimizerConfig(lr=5e-4, eps=1e-15),
                       "scheduler": MultiStepSchedulerConfig(max_steps=max_steps, gamma=0.33, milestones=milestones)}}


def _diner_optimizers(max_steps: int, table_lr: float, network_lr: float) -> dict:
    # Adam with instant-ngp's eps for both groups, each decayed a hundredfold over the run.
    return {
        group: {
            "optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15),
            "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=lr / 100, max_steps=max_steps),
        }
        for group, lr in (("table", table_lr), ("fields", network_lr))
    }


def _datamanager(rays_per_batch: int, max_auto_side: int = MAX_AUTO_RESOLUTION) -> VanillaDataManagerConfig:
    return VanillaDataManagerConfig(
        dataparser=SceneDataParserConfig(data=Path(DEFAULT_SCENE), max_auto_side=max_auto_side),
        train_num_rays_per_batch=rays_per_batch,
        eval_num_rays_per_batch=rays_per_batch,
    )


def _pipeline(model, rays_per_batch: int) -> GlobalBatchPipelineConfig:
    # On several processes the ray count is the global batch, split across them (README).
    return GlobalBatchPipelineConfig(datamanager=_datamanager(rays_per_batch), model=model)


NERF_STEPS = 50000
bn_nerf = MethodSpecification(
    config=BatchNormTrainerConfig(
        method_name="bn-nerf",
        vis="viewer",
        max_num_iterations=NERF_STEPS,
        steps_per_save=5000,
        # NeRF's field and nerfacc's grid (128^3 over the box, marched at about 1/1000 of its
        # diagonal), with nerfacc's budget of 65,536 samples a step: the ray count follows it, so the
        # first steps, which march every cell, do not need tens of GB.
        pipeline=SampleBudgetPipelineConfig(
            # The hierarchical sampler (64 + 128 samples a ray) trains at vanilla-nerf's 1,024 rays.
            datamanager=_datamanager(rays_per_batch=1024), model=BNNeRFModelConfig(sampler="occupancy"),
            target_num_samples=1 << 16,
        ),
        optimizers=_nerfacc_mlp_nerf_optimizers(NERF_STEPS),
    ),
    description="NeRF with BatchNorm in its MLPs behind an occupancy grid (--pipeline.model.sampler hierarchical: "
                "vanilla-nerf's sampling; --pipeline.model.normalization none: no BN)",
)

DINER_STEPS = 30000
bn_diner = MethodSpecification(
    config=BatchNormTrainerConfig(
        method_name="bn-diner",
        vis="viewer",
        max_num_iterations=DINER_STEPS,
        steps_per_save=2000,
        pipeline=_pipeline(
            # One 256^3 level hashed into 2^22 entries of 2 features (instant-ngp's finest level, alone),
            # marched at 1/1000 of the box's diagonal as instant-ngp does for Blender scenes.
            BNDINERModelConfig(table_resolution=256, table_features=2, log2_table_entries=22, render_step_size=0.005),
            rays_per_batch=4096,
        ),
        optimizers=_diner_optimizers(DINER_STEPS, table_lr=1e-2, network_lr=1e-2),
    ),
    description="DINER: single-level hash table + BatchNorm MLP (--pipeline.model.normalization none: DINER)",
)

# CPU-practical presets: a few CPU minutes give a recognizable scene at 100x100. Not the paper's sizes.
CPU_STEPS = 2000
CPU_MODEL_OPTIONS = dict(eval_num_rays_per_chunk=4096, batchnorm_calibration_rays=4096)
# Chosen on BN-DINER alone (issue 8) and not searched since, so if they favour an arm it is BN's:
# table size, render step, rays. (At them BN off still scored higher on lego-100: BENCHMARKS.md "NeRF".)
CPU_TABLE_RESOLUTION = 96
CPU_TABLE_FEATURES = 8
CPU_RENDER_STEP = 0.015
CPU_DINER_RAYS = 1024
# Learning rates and the prior's weight: the best of one validation search on lego-100, run for BN
# on and BN off separately (scripts/benchmark_nerf_verdict.py; BENCHMARKS.md "NeRF"): both arms
# chose the same values, so neither arm's choice is imposed on the other; each value sits at the
# edge of the grid searched.
CPU_TABLE_LR = 2e-2
CPU_TABLE_SMOOTHNESS = 1.0
CPU_NETWORK_LR = 1e-2
# The CPU presets' occupancy grid. A CPU run lasts about a thousand steps, not instant-ngp's tens of
# thousands: the grid must forget emptied space within tens of steps, not hundreds.
CPU_GRID = dict(occupancy_resolution=64, render_step_size=CPU_RENDER_STEP, occupancy_update_every=8,
                occupancy_decay=0.8, occupancy_warmup_steps=64)
CPU_NERF_RAYS = 1024
# Searched as the table's rates were, 1e-3 to 3e-2: both arms chose 1e-2 on seed 0. It helps BN's arm
# only: without BN the same rate left one test seed of three a constant render whose occupancy grid
# never empties (3.5x slower steps, ~18 GB), as did 3e-2; with normalization none, 3e-3 is the safe
# rate (BENCHMARKS.md "NeRF").
CPU_NERF_LR = 1e-2


# The CPU presets' sample budget, as the GPU default keeps nerfacc's: a step's ray count falls below the
# preset's when its rays average more than 64 samples each, so a field whose grid stays full (the BN-off
# twin of bn-nerf-cpu at 1e-2 kept one, ~200 samples a ray: 12-18 GB and 1.5-2 s a step) trains on
# fewer rays instead of taking the machine. A trained Blender scene's rays keep fewer samples than that,
# so there the ray count stays the preset's.
CPU_SAMPLE_BUDGET = 1 << 16

# The longest side a capture's images are read at by the CPU presets when --downscale-factor is not
# given (nerfstudio reads up to 1,600): a phone's 720x1280 video frame is read at 360x640 and a
# 1080x1920 one at 270x480. A CPU preset's 96^3 table or 4x128 NeRF resolves no more, and every
# eval view costs its pixel count in rays: at 360x640, a few seconds a view (BENCHMARKS.md
# "Rendering"), where 720x1280 would take four times as long and hold four times the images.
CPU_MAX_IMAGE_SIDE = 640


def _cpu_trainer(method_name: str, model: BNNeRFModelConfig, rays_per_batch: int, optimizers: dict) -> BatchNormTrainerConfig:
    """What both CPU presets share: the CPU device, the viewer's chunk, step counts, the sample budget."""
    return BatchNormTrainerConfig(
        method_name=method_name,
        vis="viewer",
        machine=MachineConfig(device_type="cpu"),
        viewer=ViewerConfig(num_rays_per_chunk=4096),
        max_num_iterations=CPU_STEPS,
        steps_per_save=500,
        steps_per_eval_image=500,
        pipeline=SampleBudgetPipelineConfig(
            datamanager=_datamanager(rays_per_batch, CPU_MAX_IMAGE_SIDE), model=model, target_num_samples=CPU_SAMPLE_BUDGET,
            max_num_rays_per_batch=rays_per_batch,
        ),
        optimizers=optimizers,
    )


bn_nerf_cpu = MethodSpecification(
    config=_cpu_trainer(
        "bn-nerf-cpu",
        BNNeRFModelConfig(
            sampler="occupancy",
            trunk_depth=4,
            trunk_width=128,
            skip_connections=(2,),
            colour_depth=1,
            colour_width=64,
            **CPU_GRID,
            **CPU_MODEL_OPTIONS,
        ),
        rays_per_batch=CPU_NERF_RAYS,
        optimizers={
            "fields": {
                "optimizer": FusedAdamOptimizerConfig(lr=CPU_NERF_LR, eps=1e-15),
                "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=CPU_NERF_LR / 100, max_steps=CPU_STEPS),
            },
        },
    ),
    description="CPU-practical bn-nerf: 4x128 trunk behind a 64^3 occupancy grid, 1,024 rays/step (not the paper's size); "
    "its rate 1e-2 is safe with BN only: with --pipeline.model.normalization none also pass "
    "--optimizers.fields.optimizer.lr 3e-3 --optimizers.fields.scheduler.lr-final 3e-5",
)

bn_diner_cpu = MethodSpecification(
    config=_cpu_trainer(
        "bn-diner-cpu",
        BNDINERModelConfig(
            table_resolution=CPU_TABLE_RESOLUTION,
            table_features=CPU_TABLE_FEATURES,
            **CPU_GRID,
            # 80 or fewer views of 100x100 pixels leave a 7-million-number table free to fit noise
            # where few views look; a total-variation prior keeps it from floaters there.
            table_smoothness=CPU_TABLE_SMOOTHNESS,
            **CPU_MODEL_OPTIONS,
        ),
        rays_per_batch=CPU_DINER_RAYS,
        optimizers=_diner_optimizers(CPU_STEPS, table_lr=CPU_TABLE_LR, network_lr=CPU_NETWORK_LR),
    ),
    description="CPU-practical bn-diner: dense table, occupancy-grid sampling (not the paper's size)",
)
