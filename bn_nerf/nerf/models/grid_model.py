"""One radiance field rendered through an occupancy grid, as instant-ngp and nerfacc render theirs:
the model of bn-diner (a table in front of a small MLP) and of bn-nerf's occupancy sampler (NeRF's
own MLP field).

Per ray batch: the occupancy grid (bn_nerf.nerf.model_components.sampling) marches every ray at a
fixed step through the scene box and keeps the samples in occupied cells; only those reach the
field, so BatchNorm's batch statistics span exactly the samples that are rendered. Densities become
weights by volume rendering of the packed samples; colour is composited on the background. The grid
is refreshed from the field's own density during training; it reads that density in eval mode
(running statistics), so a grid update never feeds BatchNorm a batch of grid points.

The scene's extent comes from the dataparser (`metadata["scene_extent"]`, bn_nerf.nerf.data.extent):
a bounded scene (Blender: images with alpha) is rendered inside its box; a capture whose background
reaches past it is contracted (bn_nerf.nerf.model_components.contraction), the grid and the field
both covering the contracted cube, and its near/far planes are the data's.

BatchNorm semantics as batchnorm_model.py says: batch statistics while training, running statistics
in ns-eval, ns-render and the viewer, re-estimated from training rays before every checkpoint.
"""

from __future__ import annotations

import abc
import logging
import math
import sys
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.rays import Frustums, RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.models.base_model import Model
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE

from bn_nerf.nerf.distributed.processes import sum_over_processes
from bn_nerf.nerf.fields.radiance_field import NormalizedRadianceField
from bn_nerf.nerf.model_components.contraction import Contraction
from bn_nerf.nerf.model_components.health import TrainingHealth
from bn_nerf.nerf.model_components.metrics import image_metrics, psnr
from bn_nerf.nerf.model_components.sampling import (OccupancyGrid, OccupancyGridSettings, PackedSamples,
                                                    composite_front_to_back, packed_weights)
from bn_nerf.nerf.models.batchnorm_model import BatchNormModelMixin, training_interval_collider
from bn_nerf.networks import reestimate_batchnorm

logger = logging.getLogger(__name__)

# Points per no-grad density query of a grid update: bounds its memory on a 128^3 grid.
DENSITY_QUERY_CHUNK = 1 << 16
# Most samples whose statistics re-estimate BatchNorm before a checkpoint (an evenly strided subset of
# the calibration rays' samples beyond it): the one field call's memory stays that of a few training
# steps however many cells are occupied, and 262,144 samples pin the statistics down to ~0.2 % of
# their spread.
CALIBRATION_MAX_SAMPLES = 1 << 18


@dataclass
class OccupancyGridOptions:
    """How a grid-rendered model samples its rays (defaults: instant-ngp's and nerfacc's for Blender)."""

    random_training_background: bool = True
    """Train on a random background colour per ray where the images have alpha: the field cannot then
    paint empty space the background's colour (a white fog on white), so empty space becomes empty
    and the occupancy grid can skip it."""
    stratified_training: bool = True
    """Jitter each training ray's samples by a random fraction of a step, so that over the steps they
    cover the whole ray (instant-ngp's and nerfacc's marching). Off, training samples sit where eval
    samples do, and a step depends on its rays alone -- with the random background off too, as a
    comparison of process counts needs (tests/test_nerf_distributed.py)."""
    occupancy_resolution: int = 128
    """Occupancy grid cells per axis over the scene box."""
    render_step_size: float = 0.005
    """Distance between samples along a ray (world units; the Blender box is 3 wide)."""
    occupancy_update_every: int = 16
    occupancy_warmup_steps: int = 256
    occupancy_threshold: float = 0.01
    occupancy_decay: float = 0.95
    """A cell's occupancy decays by this factor per update unless the field's density renews it."""
    eval_min_transmittance: float = 1e-4
    """Rendering without gradients (ns-eval, ns-render, the viewer, the eval images of a run) stops a
    ray once its transmittance falls below this, as instant-ngp and nerfacc render: every sample
    behind would weigh less. 0 composites every sample, as training does."""
    eval_samples_per_round: int = 32
    """Samples a ray in each round of that front-to-back rendering: a field call then holds at most the
    chunk's rays times this, whatever the image size."""
    scene_contraction: Literal["auto", "on", "off"] = "auto"
    """"auto": contract space beyond the scene box when the dataparser says the scene reaches past it
    (a capture without alpha), not for a bounded one (Blender); "on"/"off" force it."""

    def grid_settings(self) -> OccupancyGridSettings:
        return OccupancyGridSettings(
            resolution=self.occupancy_resolution,
            render_step_size=self.render_step_size,
            update_every=self.occupancy_update_every,
            warmup_steps=self.occupancy_warmup_steps,
            occupancy_threshold=self.occupancy_threshold,
            decay=self.occupancy_decay,
        )


class OccupancyGridModel(BatchNormModelMixin, Model):
    """A nerfstudio Model of one field (`make_field`) rendered through an occupancy grid. Its
    configuration holds OccupancyGridOptions, BatchNormOptions, the collider's and `background_color`."""

    label: str
    """The method's name in what the model prints."""
    packs_samples = True
    """A ray gets as many samples as it crosses occupied cells, counted in `num_samples_per_batch`:
    bn_nerf.nerf.engine.pipelines sizes the ray count of a step by them."""

    @abc.abstractmethod
    def make_field(self) -> NormalizedRadianceField:
        """The model's one radiance field."""

    @abc.abstractmethod
    def describe_field(self) -> str:
        """The field in a few words, for the line the first training step prints."""

    def populate_modules(self) -> None:
        super().populate_modules()
        c = self.config
        # What the dataparser derived from the data; absent when a parser of nerfstudio's is named by
        # hand, and then the configuration's near/far and a bounded box stand.
        extent = self.kwargs.get("metadata", {}).get("scene_extent")
        self.near_plane, self.far_plane = ((extent.near, extent.far) if extent is not None else
                                           (c.collider_params["near_plane"], c.collider_params["far_plane"]))
        contract = {"on": True, "off": False, "auto": extent is not None and not extent.bounded}[c.scene_contraction]
        self.contraction: Optional[Contraction] = Contraction(self.scene_box.aabb) if contract else None
        if c.enable_collider:
            self.collider = training_interval_collider({"near_plane": self.near_plane, "far_plane": self.far_plane})
        self.field = self.make_field()
        self.occupancy_grid = OccupancyGrid(self.scene_box.aabb, c.grid_settings(), self.contraction)
        self.health = TrainingHealth(self.label, self.describe_region())
        self.use_sync_batchnorm_when_distributed()
        self.renderer_rgb = RGBRenderer(background_color=c.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="expected")
        self.rgb_loss = MSELoss()

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"fields": list(self.field.parameters())}

    def describe_region(self) -> str:
        """The region the model covers, in the scene's normalized units."""
        low, high = (", ".join(f"{v:g}" for v in corner.tolist()) for corner in self.scene_box.aabb)
        beyond = "contracted beyond it" if self.contraction is not None else "empty beyond it"
        return f"box ({low})..({high}), {beyond}, near {self.near_plane:g}, far {self.far_plane:g}"

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
            grid = self.occupancy_grid
            if step == 0:
                space = "the contracted cube" if self.contraction is not None else "the scene box"
                CONSOLE.print(f"{self.label}: {self.describe_field()}, occupancy grid {grid.settings.resolution}^3 "
                              f"over {space} with rays marched by {grid.marcher}")
            grid.update(step, self.density_at)
            if grid.occupied_fraction == 0:
                # Every cell's density fell below the threshold: rendering would be all background and
                # no sample would reach the field again. Start over from a full grid, and say so.
                logger.warning("step %d: the occupancy grid emptied (density below %g everywhere); "
                               "every cell is marked occupied again", step, self.config.occupancy_threshold)
                grid.reset()

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], update_occupancy_grid,
                                 update_every_num_iters=1)]

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        num_rays = len(ray_bundle)
        origins = ray_bundle.origins.reshape(-1, 3)
        samples, fars = self.march(ray_bundle, stratified=self.training and self.config.stratified_training)
        background = self.renderer_rgb.get_background_color(self.config.background_color, (num_rays, 3), origins.device)
        outputs = {
            "rgb": background,
            "accumulation": origins.new_zeros(num_rays, 1),
            "depth": fars.reshape(num_rays, 1).clone(),
            "num_samples_per_ray": torch.bincount(samples.ray_indices, minlength=num_rays),
        }
        # BatchNorm needs two samples to compute a batch statistic; fewer means an empty view. In
        # training on several processes the group's count decides, so that every process joins BN's
        # and the gradients' collectives (one with no samples of its own adds none) or none does, and
        # a grid reset happens everywhere or nowhere.
        sample_count = len(samples.ray_indices)
        if self.training:
            sample_count = sum_over_processes(sample_count, origins.device)
        if sample_count < 2:
            if self.training:
                # A training batch that trains nothing: the grid has lost the scene along these rays.
                logger.warning("no sample of a training batch of %d rays fell in an occupied cell; "
                               "every cell is marked occupied again", num_rays)
                self.occupancy_grid.reset()
            return outputs
        if not self.training:
            return self.render_front_to_back(ray_bundle, samples, background, outputs)
        indices = samples.ray_indices
        ray_samples = self.ray_samples(ray_bundle, samples)
        field_outputs = self.field(ray_samples)
        weights = packed_weights(samples.t_starts, samples.t_ends, field_outputs[FieldHeadNames.DENSITY][:, 0],
                                 indices, num_rays)[:, None]
        outputs["rgb"] = self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights,
                                           ray_indices=indices, num_rays=num_rays)
        outputs["accumulation"] = self.renderer_accumulation(weights=weights, ray_indices=indices, num_rays=num_rays)
        if len(indices):  # nerfstudio's depth renderer cannot clip by an empty batch's range; far stays
            outputs["depth"] = self.renderer_depth(weights=weights, ray_samples=ray_samples, ray_indices=indices,
                                                   num_rays=num_rays)
        return outputs

    def march(self, ray_bundle: RayBundle, stratified: bool) -> Tuple[PackedSamples, Tensor]:
        """The samples of the bundle's rays that the occupancy grid keeps, and each ray's far bound."""
        origins = ray_bundle.origins.reshape(-1, 3)
        nears = ray_bundle.nears if ray_bundle.nears is not None else torch.zeros_like(origins[:, :1])
        fars = ray_bundle.fars if ray_bundle.fars is not None else torch.full_like(origins[:, :1], 1e10)
        samples = self.occupancy_grid.sample(origins, ray_bundle.directions.reshape(-1, 3), nears, fars, stratified)
        return samples, fars

    @staticmethod
    def ray_samples(ray_bundle: RayBundle, samples: PackedSamples, chosen: Optional[Tensor] = None) -> RaySamples:
        """nerfstudio's RaySamples of the packed samples (of those `chosen`, when given)."""
        num_rays = len(ray_bundle)
        t_starts, t_ends, indices = samples.t_starts, samples.t_ends, samples.ray_indices
        if chosen is not None:
            t_starts, t_ends, indices = t_starts[chosen], t_ends[chosen], indices[chosen]
        camera_indices = ray_bundle.camera_indices
        return RaySamples(
            frustums=Frustums(
                origins=ray_bundle.origins.reshape(-1, 3)[indices],
                directions=ray_bundle.directions.reshape(-1, 3)[indices],
                starts=t_starts[:, None],
                ends=t_ends[:, None],
                pixel_area=ray_bundle.pixel_area.reshape(num_rays, 1)[indices],
            ),
            camera_indices=camera_indices.reshape(num_rays, -1)[indices] if camera_indices is not None else None,
        )

    def render_front_to_back(self, ray_bundle: RayBundle, samples: PackedSamples, background: Tensor,
                             outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Rendering without gradients: the field evaluated in rounds front to back, rays stopped
        once nothing behind can show (`eval_min_transmittance`), each field call bounded by the
        chunk's rays x `eval_samples_per_round`. The same image as compositing every sample, to
        within that transmittance, and nerfstudio's renderers' conventions (colours made finite
        and clamped, depth the weighted midpoint clipped to the samples' range)."""

        def field_at(chosen: Tensor) -> Tuple[Tensor, Tensor]:
            field_outputs = self.field(self.ray_samples(ray_bundle, samples, chosen))
            return field_outputs[FieldHeadNames.DENSITY][:, 0], torch.nan_to_num(field_outputs[FieldHeadNames.RGB])

        c = self.config
        composited = composite_front_to_back(samples, len(ray_bundle), field_at, c.eval_samples_per_round,
                                             c.eval_min_transmittance)
        accumulation = composited.accumulation[:, None]
        midpoints = (samples.t_starts + samples.t_ends) / 2
        depth = composited.weighted_depth[:, None] / (accumulation + 1e-10)
        outputs["rgb"] = (composited.weighted_rgb + background * (1 - accumulation)).clamp(0, 1)
        outputs["accumulation"] = accumulation
        outputs["depth"] = depth.clamp(float(midpoints.min()), float(midpoints.max()))
        outputs["num_samples_per_ray"] = composited.evaluated
        return outputs

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        image = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        training_psnr = psnr(outputs["rgb"], image)
        if self.training:
            flat_colour_psnr = psnr(image.mean(dim=0, keepdim=True).expand_as(image), image)
            empty_ray_fraction = (outputs["num_samples_per_ray"] == 0).float().mean()
            # One transfer to the host a step, not one per figure: each waits for the device.
            self.health.record(*torch.stack([training_psnr.detach(), flat_colour_psnr, empty_ray_fraction]).tolist())
        return {
            "psnr": training_psnr,
            # What nerfstudio's dynamic-batch pipeline sizes the next step's ray count by.
            "num_samples_per_batch": outputs["num_samples_per_ray"].sum(),
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
        if not torch.isfinite(loss):
            # A diverged run would otherwise go on writing checkpoints of a broken field.
            print(f"error: {self.label}: the loss became {float(loss)}; training stopped "
                  f"(try a lower learning rate)", file=sys.stderr)
            sys.exit(1)
        return {"rgb_loss": loss}

    def calibrate_batchnorm(self, rays: RayBundle) -> int:
        """One field call on the rays' samples as rendering places them (at most
        CALIBRATION_MAX_SAMPLES of them, evenly strided): every occupied sample, as training
        normalizes over, not only those front-to-back rendering reaches."""
        samples, _ = self.march(rays, stratified=False)
        count = len(samples.ray_indices)
        device = rays.origins.device
        chosen = torch.arange(0, count, max(math.ceil(count / CALIBRATION_MAX_SAMPLES), 1), device=device)
        # On several processes every one joins the re-estimation's collectives, with its share or none.
        if sum_over_processes(len(chosen), device) < 2:
            return 0
        ray_samples = self.ray_samples(rays, samples, chosen)
        return reestimate_batchnorm(self.field, lambda: self.field(ray_samples))

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb"].device))
        metrics = image_metrics(outputs["rgb"], image)
        metrics_dict = {"psnr": metrics["psnr"], "ssim": metrics["ssim"]}
        if "lpips" in metrics:
            metrics_dict["lpips"] = metrics["lpips"]
        # A capture's far plane is far past anything seen: colour its depths by their own range.
        near, far = (self.near_plane, self.far_plane) if self.contraction is None else (None, None)
        images = {
            "img": torch.cat([image, outputs["rgb"]], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"],
                                                    near_plane=near, far_plane=far),
        }
        return metrics_dict, images
