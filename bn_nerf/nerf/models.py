"""bn-nerf: nerfstudio's vanilla-nerf model (coarse and fine fields, uniform then importance
sampling, the same losses and renderers) with fields from bn_nerf.nerf.fields; and what every model
of the plugin (bn-nerf here, bn-diner in bn_nerf.nerf.diner) adds to nerfstudio's for BatchNorm.

BatchNorm semantics:
  - training: every field call sees all samples of all rays of the batch, so BN normalizes with the
    statistics of the whole ray batch;
  - eval (ns-eval, ns-render, the viewer): running statistics;
  - checkpoints: before one is written the running statistics are replaced by the exact statistics
    of a large sample of training rays under the final weights (`reestimate_batchnorm_statistics`,
    called by bn_nerf.nerf.trainer), because exponential running averages lag weights that move fast.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple, Type

import torch
import torch.distributed as dist
from torch import Tensor

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.model_components.scene_colliders import NearFarCollider
from nerfstudio.models.base_model import Model
from nerfstudio.models.vanilla_nerf import NeRFModel, VanillaModelConfig
from nerfstudio.utils import colormaps

from bn_nerf.nerf.fields import NormalizedRadianceField, Normalization, NormPlacement, make_nerf_field
from bn_nerf.nerf.metrics import image_metrics
from bn_nerf.networks import convert_to_sync_batchnorm, reestimate_batchnorm
from bn_nerf.networks.norms import batchnorm_layers


def training_interval_collider(collider_params: Dict[str, float]) -> NearFarCollider:
    """The near/far collider, keeping training's interval at eval time too.

    nerfstudio's collider moves the near plane to 0 outside training (reset_near_plane). With a fixed
    number of samples that spreads eval samples over [0, far] instead of [near, far]: coarser sampling,
    samples where training never looked, and -- for BN -- a sample distribution whose statistics are
    not the ones training normalized with, which is what the checkpoint-time re-estimation would then
    record. Keep the training interval, as the original NeRF does for its test renders.
    """
    return NearFarCollider(
        near_plane=collider_params["near_plane"], far_plane=collider_params["far_plane"], reset_near_plane=False
    )


class BatchNormModelMixin(abc.ABC):
    """What both plugin models add to a nerfstudio Model for BatchNorm: SyncBatchNorm across devices
    and running statistics re-estimated from training rays (called by bn_nerf.nerf.trainer)."""

    @property
    def has_batchnorm(self) -> bool:
        return bool(batchnorm_layers(self))

    def use_sync_batchnorm(self) -> None:
        convert_to_sync_batchnorm(self)  # converts the BN layers below the model in place

    def use_sync_batchnorm_when_distributed(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Several devices: BN statistics must span the whole batch, not each device's share.
            self.use_sync_batchnorm()

    @torch.no_grad()
    def reestimate_batchnorm_statistics(self, ray_bundles: Sequence[RayBundle]) -> int:
        """Set every BN layer's running statistics to the exact statistics, under the current weights,
        of the samples these rays produce as at deployment (eval mode: deterministic sample placement,
        the training near/far interval). Returns the number of BN layers re-estimated."""
        was_training = self.training
        self.eval()
        try:
            if self.collider is not None:  # near/far bounds, as Model.forward sets them
                ray_bundles = [self.collider(rays) for rays in ray_bundles]
            return self.calibrate_batchnorm(ray_bundles)
        finally:
            self.train(was_training)

    @abc.abstractmethod
    def calibrate_batchnorm(self, ray_bundles: Sequence[RayBundle]) -> int:
        """The model's own re-estimation pass over collided rays, in eval mode."""


@dataclass
class BNNeRFModelConfig(VanillaModelConfig):
    """vanilla-nerf's configuration plus the normalization switch and the field's size."""

    _target: Type = field(default_factory=lambda: BNNeRFModel)
    normalization: Normalization = "batch"
    """"batch": BatchNorm after each hidden activation; "none": the plain baseline (vanilla-nerf)."""
    norm_placement: NormPlacement = "after"
    """BN after the ReLU (the paper's text) or before it (Linear -> BN -> ReLU, the authors' code)."""
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
    batchnorm_calibration_rays: int = 8192
    """Training rays whose exact statistics replace BN's running averages before each checkpoint."""


class BNNeRFModel(BatchNormModelMixin, NeRFModel):
    """vanilla-nerf with normalized fields and offline-safe metrics."""

    config: BNNeRFModelConfig

    def make_field(self) -> NormalizedRadianceField:
        c = self.config
        return make_nerf_field(
            normalization=c.normalization,
            norm_placement=c.norm_placement,
            trunk_depth=c.trunk_depth,
            trunk_width=c.trunk_width,
            skip_connections=c.skip_connections,
            colour_depth=c.colour_depth,
            colour_width=c.colour_width,
        )

    def populate_modules(self) -> None:
        # Model's own setup (the near/far collider), skipping NeRFModel's, which builds its fixed
        # field and an LPIPS that downloads weights.
        Model.populate_modules(self)
        if self.config.enable_collider:
            self.collider = training_interval_collider(self.config.collider_params)
        self.field_coarse = self.make_field()
        self.field_fine = self.make_field()
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

    def calibrate_batchnorm(self, ray_bundles: Sequence[RayBundle]) -> int:
        """Coarse field first: its calibrated eval-mode output places the fine samples."""
        assert self.field_coarse is not None and self.field_fine is not None
        coarse_samples = [self.sampler_uniform(rays) for rays in ray_bundles]
        count = reestimate_batchnorm(self.field_coarse, lambda: [self.field_coarse(s) for s in coarse_samples])
        fine_samples = []
        for rays, samples in zip(ray_bundles, coarse_samples):
            weights = samples.get_weights(self.field_coarse(samples)[FieldHeadNames.DENSITY])
            fine_samples.append(self.sampler_pdf(rays, samples, weights))
        count += reestimate_batchnorm(self.field_fine, lambda: [self.field_fine(s) for s in fine_samples])
        return count

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb_coarse"].device))
        fine = image_metrics(outputs["rgb_fine"], image)
        metrics_dict = {
            # The model's answer is its fine level: "psnr"/"ssim" name it as bn-diner's do.
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
