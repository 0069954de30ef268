"""Radiance fields whose MLPs come from bn_nerf.networks, so BatchNorm sits where networks/mlp.py puts it.

Both fields have vanilla NeRF's shape: position features -> trunk -> density, and trunk features +
encoded view direction -> colour network -> RGB. They differ only in the position features:
  - NeRF: NeRF's positional encoding of the raw position (exactly nerfstudio's vanilla-nerf encoding).
  - DINER: one learnable table of features on a grid over the scene box (tables.py: dense when it
    fits its budget, hashed otherwise), read at the position normalized to the box; space outside
    the box is empty.
For a capture whose background reaches past the box, both read positions through the scene's
contraction (bn_nerf.nerf.model_components.contraction): the DINER table then covers the
contracted cube, and NeRF's encoding sees contracted positions, as mip-NeRF 360 encodes them.
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.field_components.field_heads import DensityFieldHead, FieldHeadNames, RGBFieldHead
from nerfstudio.fields.base_field import Field

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.fields.tables import FeatureTable, Implementation
from bn_nerf.nerf.model_components.contraction import Contraction
from bn_nerf.networks import build_network

Normalization = Literal["batch", "none"]
NormPlacement = Literal["after", "before"]

# normalization switch -> network preset: BN off is the plain ReLU network of the baseline.
NETWORK_METHOD = {"batch": "bn", "none": "relu"}


def encode(encoding: nn.Module, inputs: Tensor) -> Tensor:
    """`encoding(inputs)`, also for no rows, which nerfstudio's NeRFEncoding cannot reshape: a process
    of several whose share of a batch has no samples still runs the networks, to take part in
    BatchNorm's collectives."""
    if inputs.shape[0] == 0:
        return inputs.new_zeros(0, encoding.get_out_dim())
    return encoding(inputs)


def nerf_position_encoding() -> NeRFEncoding:
    """vanilla-nerf's position encoding: 10 frequencies 2^0 .. 2^8 (times 2 pi), input included."""
    return NeRFEncoding(in_dim=3, num_frequencies=10, min_freq_exp=0.0, max_freq_exp=8.0, include_input=True)


def nerf_direction_encoding() -> NeRFEncoding:
    """vanilla-nerf's direction encoding: 4 frequencies 2^0 .. 2^4 (times 2 pi), input included."""
    return NeRFEncoding(in_dim=3, num_frequencies=4, min_freq_exp=0.0, max_freq_exp=4.0, include_input=True)


class NormalizedRadianceField(Field):
    """A NeRF-shaped field whose trunk and colour network are coordinate networks with an optional
    normalization after (or before) each hidden activation.

    Args:
        position_encoding: features of a 3D position (fixed encoding or learnable table).
        direction_encoding: features of the unit view direction.
        normalization: "batch" puts BatchNorm in every hidden layer; "none" is the plain baseline.
        norm_placement: BN after the ReLU (the paper's text) or before it (the authors' code).
        trunk_depth, trunk_width, skip_connections: the position network; the skip re-injects the
            position features into the input of those hidden layers (NeRF's layer 4).
        colour_depth, colour_width: the view-dependent colour network on trunk features + direction.
        init_scheme: "torch_default" reproduces nerfstudio's vanilla-nerf initialization.
        scene_aabb: when given, positions are mapped from this box to [0, 1] before encoding (hash grids
            address the unit cube) and space outside the box is empty; when None the raw position is
            encoded everywhere, as vanilla NeRF does.
        contraction: when given, positions are contracted first (and `scene_aabb`, if any, is a box in
            contracted space), so that all of space is modelled.
    """

    def __init__(
        self,
        position_encoding: nn.Module,
        direction_encoding: nn.Module,
        normalization: Normalization = "batch",
        norm_placement: NormPlacement = "after",
        trunk_depth: int = 8,
        trunk_width: int = 256,
        skip_connections: Tuple[int, ...] = (4,),
        colour_depth: int = 2,
        colour_width: int = 128,
        init_scheme: Literal["method", "torch_default"] = "torch_default",
        scene_aabb: Optional[Tensor] = None,
        contraction: Optional[Contraction] = None,
    ) -> None:
        super().__init__()
        if normalization not in NETWORK_METHOD:
            raise InputError(f"unknown normalization '{normalization}'; choose from {', '.join(NETWORK_METHOD)}")
        self.position_encoding = position_encoding
        self.direction_encoding = direction_encoding
        self.trunk_width = trunk_width
        self.scene_aabb: Optional[Tensor]
        self.register_buffer("scene_aabb", scene_aabb.clone() if scene_aabb is not None else None)
        self.contraction = contraction
        network_options = dict(encoding="none", norm_placement=norm_placement, init_scheme=init_scheme)
        method = NETWORK_METHOD[normalization]
        # The networks receive already-encoded inputs (encoding="none"), so the trunk's skip
        # concatenates the position features, as in vanilla NeRF.
        self.trunk = build_network(
            method,
            position_encoding.get_out_dim(),
            None,
            trunk_depth,
            trunk_width,
            skip_connections=tuple(skip_connections),
            **network_options,
        )
        self.colour_network = build_network(
            method, direction_encoding.get_out_dim() + trunk_width, None, colour_depth, colour_width, **network_options
        )
        self.density_head = DensityFieldHead(in_dim=trunk_width)
        self.rgb_head = RGBFieldHead(in_dim=colour_width)

    def inside_scene_box(self, ray_samples: RaySamples) -> Tuple[Tensor, Optional[Tensor]]:
        """The sample positions as the position encoding takes them, and which samples it may read:
        all of them (None) without a box or when every sample lies inside it; else a mask of those
        inside (positions normalized to [0, 1])."""
        positions = ray_samples.frustums.get_positions()
        if self.contraction is not None:
            positions = self.contraction(positions)
        if self.scene_aabb is None:
            return positions, None
        positions = SceneBox.get_normalized_positions(positions, self.scene_aabb)
        inside = ((positions > 0.0) & (positions < 1.0)).all(dim=-1)
        # The occupancy grid keeps samples in the box's cells, so usually all are inside: the
        # networks then take them as they are, without a gather and a scatter (the same rows, in
        # the same order, so BN's statistics are the same).
        return positions, None if bool(inside.all()) else inside

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False) -> Dict[FieldHeadNames, Tensor]:
        """nerfstudio's Field.forward, with the positions and the box test computed once for density
        and colour."""
        if compute_normals:
            return super().forward(ray_samples, compute_normals)
        positions, inside = self.inside_scene_box(ray_samples)
        density, trunk_features = self.density_at(positions, inside)
        outputs = self.colour_at(ray_samples.frustums.directions, trunk_features, inside)
        outputs[FieldHeadNames.DENSITY] = density
        return outputs

    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        return self.density_at(*self.inside_scene_box(ray_samples))

    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None
    ) -> Dict[FieldHeadNames, Tensor]:
        assert density_embedding is not None, "Field.forward passes the trunk features from get_density"
        _, inside = self.inside_scene_box(ray_samples)
        return self.colour_at(ray_samples.frustums.directions, density_embedding, inside)

    def density_at(self, positions: Tensor, inside: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Density and trunk features at encoded-space positions (`inside_scene_box`)."""
        if inside is None:
            trunk_features = self.trunk(encode(self.position_encoding, positions))
            return self.density_head(trunk_features), trunk_features
        # A hash table addresses the unit cube only: outside it the hash of the cell wraps onto entries
        # of cells inside, so empty space past the box would train the scene's own entries. Space
        # outside the box is empty, as in nerfstudio's nerfacto field; unlike there, its samples are
        # kept out of the networks altogether, so that BN's batch statistics describe the scene's
        # samples rather than a pile of identical masked positions.
        trunk_features = positions.new_zeros(*inside.shape, self.trunk_width)
        trunk_features[inside] = self.trunk(encode(self.position_encoding, positions[inside]))
        density = positions.new_zeros(*inside.shape, 1)
        density[inside] = self.density_head(trunk_features[inside])
        return density, trunk_features

    def colour_at(self, directions: Tensor, trunk_features: Tensor, inside: Optional[Tensor]) -> Dict[FieldHeadNames, Tensor]:
        """View-dependent colour from the trunk features (`density_at`) and the view directions."""
        encoded_directions = encode(self.direction_encoding, directions)
        # vanilla-nerf's order: direction features first, then trunk features.
        colour_inputs = torch.cat([encoded_directions, trunk_features], dim=-1)
        if inside is None:
            return {FieldHeadNames.RGB: self.rgb_head(self.colour_network(colour_inputs))}
        # Samples outside the box have zero density, so their colour has no weight in the render.
        rgb = colour_inputs.new_zeros(*inside.shape, 3)
        rgb[inside] = self.rgb_head(self.colour_network(colour_inputs[inside]))
        return {FieldHeadNames.RGB: rgb}


def make_nerf_field(
    normalization: Normalization = "batch",
    norm_placement: NormPlacement = "after",
    trunk_depth: int = 8,
    trunk_width: int = 256,
    skip_connections: Tuple[int, ...] = (4,),
    colour_depth: int = 2,
    colour_width: int = 128,
    contraction: Optional[Contraction] = None,
) -> NormalizedRadianceField:
    """vanilla-nerf's field (defaults: 8x256 trunk with the skip at layer 4, 2x128 colour network),
    with the normalization switch (and positions contracted first for a scene past its box)."""
    return NormalizedRadianceField(
        nerf_position_encoding(),
        nerf_direction_encoding(),
        normalization=normalization,
        norm_placement=norm_placement,
        trunk_depth=trunk_depth,
        trunk_width=trunk_width,
        skip_connections=skip_connections,
        colour_depth=colour_depth,
        colour_width=colour_width,
        init_scheme="torch_default",
        contraction=contraction,
    )


def make_diner_field(
    scene_aabb: Tensor,
    normalization: Normalization = "batch",
    norm_placement: NormPlacement = "after",
    table_resolution: int = 128,
    table_features: int = 4,
    log2_table_entries: int = 21,
    table_implementation: Implementation = "auto",
    trunk_depth: int = 2,
    trunk_width: int = 64,
    colour_depth: int = 2,
    colour_width: int = 64,
    contraction: Optional[Contraction] = None,
) -> NormalizedRadianceField:
    """DINER's field: one table of `table_resolution`^3 vertices over the scene box (with a
    contraction: over the contracted cube) in front of a small MLP with the LeCun initialization of
    the paper's nets (dense table when it fits 2^`log2_table_entries` entries, hashed otherwise;
    tiny-cuda-nn when it imports on CUDA)."""
    table = FeatureTable(table_resolution, table_features, log2_table_entries, implementation=table_implementation)
    return NormalizedRadianceField(
        table,
        nerf_direction_encoding(),
        normalization=normalization,
        norm_placement=norm_placement,
        trunk_depth=trunk_depth,
        trunk_width=trunk_width,
        skip_connections=(),
        colour_depth=colour_depth,
        colour_width=colour_width,
        init_scheme="method",
        scene_aabb=contraction.contracted_aabb if contraction is not None else scene_aabb,
        contraction=contraction,
    )
