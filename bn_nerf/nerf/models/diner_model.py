"""bn-diner: DINER's field (a learnable table in front of a small BN MLP) rendered with empty-space
skipping, as instant-ngp renders its hash grid (grid_model.py).

The table is dense (one entry per vertex) when it fits its budget and hashed otherwise, in torch or
through tiny-cuda-nn (bn_nerf.nerf.fields.tables); an optional total-variation prior on a dense table keeps
the few views of a CPU run from fitting floaters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Type

from torch import Tensor
from torch.nn import Parameter

from nerfstudio.models.base_model import ModelConfig

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.fields.radiance_field import NormalizedRadianceField, make_diner_field
from bn_nerf.nerf.fields.tables import Implementation
from bn_nerf.nerf.models.batchnorm_model import BatchNormOptions
from bn_nerf.nerf.models.grid_model import OccupancyGridModel, OccupancyGridOptions

# Side of the random table block of a step's smoothness estimate (40^3: 64,000 vertices).
SMOOTHNESS_BLOCK = 40


@dataclass
class BNDINERModelConfig(BatchNormOptions, OccupancyGridOptions, ModelConfig):
    """DINER's table + BN MLP, rendered with an occupancy grid. Blender defaults (near 2, far 6, white)."""

    _target: Type = field(default_factory=lambda: BNDINERModel)
    enable_collider: bool = True
    collider_params: Dict[str, float] = field(default_factory=lambda: {"near_plane": 2.0, "far_plane": 6.0})
    background_color: Literal["white", "black"] = "white"
    """Colour behind the scene in every render (Blender scenes: white)."""
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


class BNDINERModel(OccupancyGridModel):
    config: BNDINERModelConfig
    label = "bn-diner"

    def make_field(self) -> NormalizedRadianceField:
        c = self.config
        field = make_diner_field(
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
            contraction=self.contraction,
        )
        backend = field.position_encoding.backend
        if c.table_smoothness > 0 and backend != "torch-dense":
            # Found here, before training, rather than at the first step's loss.
            raise InputError(f"bn-diner: table_smoothness needs a dense torch table; this one is {backend} "
                             f"(set --pipeline.model.table-smoothness 0, or a table that fits densely)")
        return field

    def describe_field(self) -> str:
        table = self.field.position_encoding
        return f"table {table.resolution}^3 x {table.features} ({table.backend})"

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        table = list(self.field.position_encoding.parameters())
        table_ids = {id(p) for p in table}
        return {"table": table, "fields": [p for p in self.field.parameters() if id(p) not in table_ids]}

    def get_loss_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], metrics_dict=None) -> Dict[str, Tensor]:
        losses = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and self.config.table_smoothness > 0:
            penalty = self.field.position_encoding.smoothness_penalty(SMOOTHNESS_BLOCK)
            losses["table_smoothness"] = self.config.table_smoothness * penalty
        return losses
