"""bn-diner: DINER's field (a learnable table in front of a small BN MLP) rendered with empty-space
skipping, as instant-ngp renders its hash grid.

Per ray batch: the occupancy grid (bn_nerf.nerf.sampling) marches every ray at a fixed step through
the scene box and keeps the samples in occupied cells; only those reach the field, so BatchNorm's
batch statistics span exactly the samples that are rendered. Densities become weights by volume
rendering of the packed samples; colour is composited on the background.

BatchNorm semantics as in bn-nerf: batch statistics while training, running statistics in ns-eval,
ns-render and the viewer, re-estimated from training rays before every checkpoint. The occupancy
grid reads the field's density in eval mode (running statistics), so a grid update never feeds
BatchNorm a batch of grid points.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Sequence, Tuple, Type

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.rays import Frustums, RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE

from bn_nerf.nerf.fields import Normalization, NormPlacement, make_diner_field
from bn_nerf.nerf.metrics import image_metrics, psnr
from bn_nerf.nerf.models import BatchNormModelMixin, training_interval_collider
from bn_nerf.nerf.sampling import OccupancyGrid, OccupancyGridSettings, packed_weights
from bn_nerf.nerf.tables import Implementation
from bn_nerf.networks import reestimate_batchnorm

logger = logging.getLogger(__name__)

# Points per no-grad density query of a grid update: bounds its memory on a 128^3 grid.
DENSITY_QUERY_CHUNK = 1 << 16
# Side of the random table block of a step's smoothness estimate (40^3: 64,000 vertices).
SMOOTHNESS_BLOCK = 40


@dataclass
class BNDINERModelConfig(ModelConfig):
    """DINER's table + BN MLP, rendered with an occupancy grid. Blender defaults (near 2, far 6, white)."""

    _target: Type = field(default_factory=lambda: BNDINERModel)
    enable_collider: bool = True
    collider_params: Dict[str, float] = field(default_factory=lambda: {"near_plane": 2.0, "far_plane": 6.0})
    background_color: Literal["white", "black"] = "white"
    """Colour behind the scene in every render (Blender scenes: white)."""
    random_training_background: bool = True
    """Train on a random background colour per ray where the images have alpha: the field cannot then
    paint empty space the background's colour (a white fog on white), so empty space becomes empty
    and the occupancy grid can skip it."""
    normalization: Normalization = "batch"
    """"batch": BatchNorm after each hidden activation; "none": DINER's plain MLP."""
    norm_placement: NormPlacement = "after"
    """BN after the ReLU (the paper's text) or before it (the authors' code)."""
    table_resolution: int = 128
    """Table grid vertices per axis over the scene box."""
    table_features: int = 4
    """Features per table entry."""
    log2_table_entries: int = 21
    """Table budget: dense (one entry per vertex) when resolution^3 fits 2^this, hashed otherwise."""
    table_implementation: Implementation = "auto"
    """"auto": tiny-cuda-nn when it imports on CUDA, torch otherwise; "torch": always torch."""
    table_smoothness: float = 0.0
    """Weight of a total-variation prior on a dense torch table (0: none): the mean squared difference
    of neighbouring entries, on a random 40^3 block a step."""
    trunk_depth: int = 2
    trunk_width: int = 64
    colour_depth: int = 2
    colour_width: int = 64
    occupancy_resolution: int = 128
    """Occupancy grid cells per axis over the scene box."""
    render_step_size: float = 0.005
    """Distance between samples along a ray (world units; the Blender box is 3 wide)."""
    occupancy_update_every: int = 16
    occupancy_warmup_steps: int = 256
    occupancy_threshold: float = 0.01
    occupancy_decay: float = 0.95
    """A cell's occupancy decays by this factor per update unless the field's density renews it."""
    batchnorm_calibration_rays: int = 8192
    """Training rays whose exact statistics replace BN's running averages before each checkpoint."""


class BNDINERModel(BatchNormModelMixin, Model):
    config: BNDINERModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        c = self.config
        if c.enable_collider:
            self.collider = training_interval_collider(c.collider_params)
        self.field = make_diner_field(
            self.scene_box.aabb,
            normalization=c.normalization,
            norm_placement=c.norm_placement,
            table_resolution=c.table_resolution,
            table_features=c.table_features,
            log2_table_entries=c.log2_table_entries,
            table_implementation=c.table_implementation,
            trunk_depth=c.trunk_depth,
            trunk_width=c.trunk_width,
            colour_depth=c.colour_depth,
            colour_width=c.colour_width,
        )
        backend = self.field.position_encoding.backend
        if c.table_smoothness > 0 and backend != "torch-dense":
            # Found here, before training, rather than at the first step's loss.
            raise ValueError(f"bn-diner: table_smoothness needs a dense torch table; this one is {backend} "
                             f"(set --pipeline.model.table-smoothness 0, or a table that fits densely)")
        self.occupancy_grid = OccupancyGrid(
            self.scene_box.aabb,
            OccupancyGridSettings(
                resolution=c.occupancy_resolution,
                render_step_size=c.render_step_size,
                update_every=c.occupancy_update_every,
                warmup_steps=c.occupancy_warmup_steps,
                occupancy_threshold=c.occupancy_threshold,
                decay=c.occupancy_decay,
            ),
        )
        self.use_sync_batchnorm_when_distributed()
        self.renderer_rgb = RGBRenderer(background_color=c.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="expected")
        self.rgb_loss = MSELoss()

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        table = list(self.field.position_encoding.parameters())
        table_ids = {id(p) for p in table}
        return {"table": table, "fields": [p for p in self.field.parameters() if id(p) not in table_ids]}

    @torch.no_grad()
    def density_at(self, positions: Tensor) -> Tensor:
        """The field's density at world positions, in eval mode (BN running statistics)."""
        was_training = self.field.training
        self.field.eval()
        try:
            return torch.cat([self.field.density_fn(chunk) for chunk in positions.split(DENSITY_QUERY_CHUNK)])
        finally:
            self.field.train(was_training)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        def update_occupancy_grid(step: int) -> None:
            if step == 0:
                table, grid = self.field.position_encoding, self.occupancy_grid
                CONSOLE.print(f"bn-diner: table {table.resolution}^3 x {table.features} ({table.backend}), "
                              f"occupancy grid {grid.settings.resolution}^3 with rays marched by {grid.marcher}")
            self.occupancy_grid.update(step, self.density_at)
            if self.occupancy_grid.occupied_fraction == 0:
                # Every cell's density fell below the threshold: rendering would be all background and
                # no sample would reach the field again. Start over from a full grid, and say so.
                logger.warning("step %d: the occupancy grid emptied (density below %g everywhere); "
                               "every cell is marked occupied again", step, self.config.occupancy_threshold)
                self.occupancy_grid.reset()

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], update_occupancy_grid,
                                 update_every_num_iters=1)]

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        num_rays = len(ray_bundle)
        origins, directions = ray_bundle.origins.reshape(-1, 3), ray_bundle.directions.reshape(-1, 3)
        nears = ray_bundle.nears if ray_bundle.nears is not None else torch.zeros_like(origins[:, :1])
        fars = ray_bundle.fars if ray_bundle.fars is not None else torch.full_like(origins[:, :1], 1e10)
        samples = self.occupancy_grid.sample(origins, directions, nears, fars, stratified=self.training)
        background = self.renderer_rgb.get_background_color(self.config.background_color, (num_rays, 3), origins.device)
        outputs = {
            "rgb": background,
            "accumulation": origins.new_zeros(num_rays, 1),
            "depth": fars.reshape(num_rays, 1).clone(),
            "num_samples_per_ray": torch.bincount(samples.ray_indices, minlength=num_rays),
        }
        # BatchNorm needs two samples to compute a batch statistic; fewer means an empty view.
        if len(samples.ray_indices) < 2:
            return outputs
        indices = samples.ray_indices
        camera_indices = ray_bundle.camera_indices.reshape(num_rays, -1)[indices] if ray_bundle.camera_indices is not None else None
        ray_samples = RaySamples(
            frustums=Frustums(
                origins=origins[indices],
                directions=directions[indices],
                starts=samples.t_starts[:, None],
                ends=samples.t_ends[:, None],
                pixel_area=ray_bundle.pixel_area.reshape(num_rays, 1)[indices],
            ),
            camera_indices=camera_indices,
        )
        field_outputs = self.field(ray_samples)
        weights = packed_weights(samples.t_starts, samples.t_ends, field_outputs[FieldHeadNames.DENSITY][:, 0],
                                 indices, num_rays)[:, None]
        outputs["rgb"] = self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights,
                                           ray_indices=indices, num_rays=num_rays)
        outputs["accumulation"] = self.renderer_accumulation(weights=weights, ray_indices=indices, num_rays=num_rays)
        outputs["depth"] = self.renderer_depth(weights=weights, ray_samples=ray_samples, ray_indices=indices,
                                               num_rays=num_rays)
        return outputs

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        image = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        return {
            "psnr": psnr(outputs["rgb"], image),
            "samples_per_ray": outputs["num_samples_per_ray"].float().mean(),
            "occupied_fraction": torch.tensor(self.occupancy_grid.occupied_fraction),
        }

    def get_loss_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], metrics_dict=None) -> Dict[str, Tensor]:
        image = batch["image"].to(self.device)
        predicted = outputs["rgb"]
        if self.training and self.config.random_training_background and image.shape[-1] == 4:
            # The render is composited on the configured background; swap that for a random one, in the
            # prediction (through its transparency) and in the ground truth (through its alpha) alike.
            background = torch.rand_like(predicted)
            configured = self.renderer_rgb.get_background_color(self.config.background_color, predicted.shape, predicted.device)
            predicted = predicted + (1 - outputs["accumulation"]) * (background - configured)
            image = image[..., :3] * image[..., 3:] + background * (1 - image[..., 3:])
        else:
            image = self.renderer_rgb.blend_background(image)
        loss = self.rgb_loss(image, predicted)
        losses = {"rgb_loss": loss}
        if self.training and self.config.table_smoothness > 0:
            penalty = self.field.position_encoding.smoothness_penalty(SMOOTHNESS_BLOCK)
            losses["table_smoothness"] = self.config.table_smoothness * penalty
        if not torch.isfinite(loss):
            # A diverged run would otherwise go on writing checkpoints of a broken field.
            print(f"error: bn-diner: the loss became {float(loss)}; training stopped (try a lower learning rate)",
                  file=sys.stderr)
            sys.exit(1)
        return losses

    def calibrate_batchnorm(self, ray_bundles: Sequence[RayBundle]) -> int:
        return reestimate_batchnorm(self.field, lambda: [self.get_outputs(rays) for rays in ray_bundles])

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb"].device))
        metrics = image_metrics(outputs["rgb"], image)
        metrics_dict = {"psnr": metrics["psnr"], "ssim": metrics["ssim"]}
        if "lpips" in metrics:
            metrics_dict["lpips"] = metrics["lpips"]
        near, far = self.config.collider_params["near_plane"], self.config.collider_params["far_plane"]
        images = {
            "img": torch.cat([image, outputs["rgb"]], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"],
                                                    near_plane=near, far_plane=far),
        }
        return metrics_dict, images
