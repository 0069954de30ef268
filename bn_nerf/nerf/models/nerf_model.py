"""bn-nerf: the paper's BN+NeRF -- NeRF's field (PE with 10/4 octaves, 8x256 trunk with the skip at
layer 4, view-dependent colour head) with BatchNorm in its MLPs -- rendered by either of two samplers:

  occupancy     (default) one field, rendered through an occupancy grid that drops the samples of empty
                cells before the MLP runs, as nerfacc renders its MLP NeRF (grid_model.py):
                the MLP sees a few dozen samples a ray where the scene is, instead of 192 spread along
                it. BN's batch statistics span exactly the rendered samples.
  hierarchical  nerfstudio's vanilla-nerf: coarse and fine fields, uniform then importance sampling,
                the same losses and renderers. With normalization "none" this is vanilla-nerf itself.

Both samplers build their fields with bn_nerf.nerf.fields.radiance_field, so BN on and off differ by
the switch alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Type

import torch
from torch import Tensor

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.models.base_model import Model
from nerfstudio.models.vanilla_nerf import NeRFModel, VanillaModelConfig
from nerfstudio.utils import colormaps

from bn_nerf.nerf.fields.radiance_field import NormalizedRadianceField, make_nerf_field
from bn_nerf.nerf.model_components.contraction import Contraction
from bn_nerf.nerf.model_components.metrics import image_metrics
from bn_nerf.nerf.models.batchnorm_model import BatchNormModelMixin, BatchNormOptions, training_interval_collider
from bn_nerf.nerf.models.grid_model import OccupancyGridModel, OccupancyGridOptions
from bn_nerf.networks import reestimate_batchnorm

Sampler = Literal["occupancy", "hierarchical"]


def bn_nerf_model(config: "BNNeRFModelConfig", **kwargs) -> Model:
    """The model of the configured sampler (the configuration's `_target`)."""
    model_class = BNNeRFGridModel if config.sampler == "occupancy" else BNNeRFModel
    return model_class(config=config, **kwargs)


@dataclass
class BNNeRFModelConfig(BatchNormOptions, OccupancyGridOptions, VanillaModelConfig):
    """vanilla-nerf's configuration plus the normalization switch, the field's size and the sampler.
    The occupancy-grid options (random training background, grid and step) are the occupancy
    sampler's; vanilla-nerf's sample counts are the hierarchical sampler's."""

    _target: Type = field(default_factory=lambda: bn_nerf_model)
    sampler: Sampler = "occupancy"
    """"occupancy": one field behind an occupancy grid (nerfacc's MLP NeRF); "hierarchical":
    vanilla-nerf's coarse and fine fields and samplers."""
    trunk_depth: int = 8
    """Hidden layers of the position network (NeRF: 8)."""
    trunk_width: int = 256
    """Width of the position network (NeRF: 256)."""
    skip_connections: Tuple[int, ...] = (4,)
    """Hidden layers whose input also receives the encoded position (NeRF: layer 4)."""
    colour_depth: int = 2
    """Hidden layers of the view-dependent colour network (nerfstudio's vanilla-nerf: 2)."""
    colour_width: int = 128
    """Width of the colour network (nerfstudio's vanilla-nerf: 128)."""


def nerf_field(config: BNNeRFModelConfig, contraction: Optional[Contraction] = None) -> NormalizedRadianceField:
    """NeRF's field at the configured size, with the normalization switch (reading positions through
    the scene's contraction, when it has one)."""
    return make_nerf_field(
        normalization=config.normalization,
        norm_placement=config.norm_placement,
        trunk_depth=config.trunk_depth,
        trunk_width=config.trunk_width,
        skip_connections=config.skip_connections,
        colour_depth=config.colour_depth,
        colour_width=config.colour_width,
        contraction=contraction,
    )


class SamplerCheckpointMixin:
    """A bn-nerf checkpoint loads only into a model of the sampler it was trained with: the two keep
    different fields (coarse and fine, or one field and its occupancy grid)."""

    sampler: Sampler

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        trained_with = "occupancy" if any(key.startswith("occupancy_grid.") for key in state_dict) else "hierarchical"
        if trained_with != self.sampler:
            # Reached from ns-eval, ns-render, ns-viewer and ns-train --load-dir alike: one line, as
            # their CLIs report a usage error, instead of torch's list of missing and unexpected keys.
            print(f"error: bn-nerf: the checkpoint was trained with the {trained_with} sampler but the configuration "
                  f"asks for the {self.sampler} sampler (load it with --pipeline.model.sampler {trained_with})",
                  file=sys.stderr)
            sys.exit(2)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class BNNeRFGridModel(SamplerCheckpointMixin, OccupancyGridModel):
    """NeRF's field rendered through an occupancy grid."""

    config: BNNeRFModelConfig
    label = "bn-nerf"
    sampler = "occupancy"

    def make_field(self) -> NormalizedRadianceField:
        return nerf_field(self.config, self.contraction)

    def describe_field(self) -> str:
        c = self.config
        normalization = f"BatchNorm {c.norm_placement} each ReLU" if c.normalization == "batch" else "no normalization"
        return f"NeRF field {c.trunk_depth}x{c.trunk_width} ({normalization})"


class BNNeRFModel(SamplerCheckpointMixin, BatchNormModelMixin, NeRFModel):
    """vanilla-nerf (hierarchical sampler) with normalized fields and offline-safe metrics."""

    config: BNNeRFModelConfig
    sampler = "hierarchical"

    def populate_modules(self) -> None:
        # Model's own setup (the near/far collider), skipping NeRFModel's, which builds its fixed
        # field and an LPIPS that downloads weights.
        Model.populate_modules(self)
        if self.config.enable_collider:
            self.collider = training_interval_collider(self.config.collider_params)
        self.field_coarse = nerf_field(self.config)
        self.field_fine = nerf_field(self.config)
        self.use_sync_batchnorm_when_distributed()
        self.sampler_uniform = UniformSampler(num_samples=self.config.num_coarse_samples)
        self.sampler_pdf = PDFSampler(num_samples=self.config.num_importance_samples)
        self.renderer_rgb = RGBRenderer(background_color=self.config.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer()
        self.rgb_loss = MSELoss()
        if self.config.enable_temporal_distortion:
            params = dict(self.config.temporal_distortion_params)
            kind = params.pop("kind")
            self.temporal_distortion = kind.to_temporal_distortion(params)

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        levels = super().get_outputs(ray_bundle)
        # The viewer and ns-render look for "rgb" and "depth"; vanilla-nerf only names its levels,
        # which is why its viewer renders fail. The fine level is the model's answer, listed first
        # so that it is the viewer's default output.
        return {**{name: levels[f"{name}_fine"] for name in ("rgb", "accumulation", "depth")}, **levels}

    def calibrate_batchnorm(self, rays: RayBundle) -> int:
        """Coarse field first: its calibrated eval-mode output places the fine samples."""
        assert self.field_coarse is not None and self.field_fine is not None
        coarse_samples = self.sampler_uniform(rays)
        count = reestimate_batchnorm(self.field_coarse, lambda: self.field_coarse(coarse_samples))
        weights = coarse_samples.get_weights(self.field_coarse(coarse_samples)[FieldHeadNames.DENSITY])
        fine_samples = self.sampler_pdf(rays, coarse_samples, weights)
        count += reestimate_batchnorm(self.field_fine, lambda: self.field_fine(fine_samples))
        return count

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb_coarse"].device))
        fine = image_metrics(outputs["rgb_fine"], image)
        metrics_dict = {
            # The model's answer is its fine level: "psnr"/"ssim" name it as the grid models' do.
            "psnr": fine["psnr"],
            "ssim": fine["ssim"],
            "coarse_psnr": image_metrics(outputs["rgb_coarse"], image)["psnr"],
            "fine_psnr": fine["psnr"],
            "fine_ssim": fine["ssim"],
        }
        if "lpips" in fine:
            metrics_dict["fine_lpips"] = fine["lpips"]

        near, far = self.config.collider_params["near_plane"], self.config.collider_params["far_plane"]
        images: Dict[str, List[Tensor]] = {"img": [image], "accumulation": [], "depth": []}
        for level in ("coarse", "fine"):
            accumulation = outputs[f"accumulation_{level}"]
            images["img"].append(outputs[f"rgb_{level}"])
            images["accumulation"].append(colormaps.apply_colormap(accumulation))
            images["depth"].append(
                colormaps.apply_depth_colormap(
                    outputs[f"depth_{level}"], accumulation=accumulation, near_plane=near, far_plane=far
                )
            )
        return metrics_dict, {name: torch.cat(parts, dim=1) for name, parts in images.items()}
