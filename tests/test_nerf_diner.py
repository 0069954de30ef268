"""The grid-rendered models' parts: bn-diner's feature table (layout and backend), the occupancy grid
(marching, updates, recovery) that bn-diner and bn-nerf's occupancy sampler share, packed volume
rendering, and where BatchNorm sits in both NeRF fields."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from nerfstudio.cameras.rays import Frustums, RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.field_heads import FieldHeadNames

from bn_nerf.nerf.fields.radiance_field import make_diner_field, make_nerf_field
from bn_nerf.nerf.fields.tables import FeatureTable
from bn_nerf.nerf.model_components.sampling import (OccupancyGrid, OccupancyGridSettings, PackedSamples,
                                                    composite_front_to_back, packed_weights)
from bn_nerf.nerf.models.diner_model import BNDINERModelConfig
from bn_nerf.nerf.models.nerf_model import BNNeRFModelConfig

BOX = torch.tensor([[-1.5] * 3, [1.5] * 3])


@pytest.mark.parametrize("resolution, log2_entries, layout", [(8, 9, "dense"), (9, 9, "hashed")])
def test_table_is_dense_when_the_grid_fits_and_hashed_when_not(resolution, log2_entries, layout, caplog):
    with caplog.at_level(logging.INFO, logger="bn_nerf.nerf.fields.tables"):
        table = FeatureTable(resolution, 3, log2_entries)
    # No CUDA here, so torch runs the table, and says so.
    assert table.layout == layout and table.backend == f"torch-{layout}"
    assert table.entries == (resolution**3 if layout == "dense" else 2**log2_entries)
    assert f"torch-{layout}" in caplog.text


@pytest.mark.parametrize("resolution, log2_entries", [(8, 9), (9, 9)])
def test_table_reads_vertices_exactly_and_interpolates_linearly_between_them(resolution, log2_entries):
    torch.manual_seed(0)
    table = FeatureTable(resolution, 3, log2_entries, init_scale=1.0)
    cell = 1.0 / (resolution - 1)
    vertex_a = torch.tensor([[2, 5, 3]]) * cell
    vertex_b = vertex_a + torch.tensor([[0.0, 0.0, cell]])
    with torch.no_grad():
        a, b, middle = table(vertex_a), table(vertex_b), table((vertex_a + vertex_b) / 2)
        quarter = table(0.75 * vertex_a + 0.25 * vertex_b)
    torch.testing.assert_close(middle, (a + b) / 2)
    torch.testing.assert_close(quarter, 0.75 * a + 0.25 * b)
    assert not torch.allclose(a, b)


def test_dense_table_gradient_reaches_only_the_eight_corners_of_the_cell():
    table = FeatureTable(6, 2, 12)
    position = torch.tensor([[0.31, 0.47, 0.55]])
    table(position).sum().backward()
    touched = (table.table.grad.abs().sum(0) > 0).sum()
    assert touched == 8
    # Trilinear weights sum to one per feature.
    assert torch.allclose(table.table.grad.sum((1, 2, 3)), torch.ones(2))


def padded_weights(t_starts, t_ends, densities):
    """Textbook volume-rendering weights of one ray's samples, for comparison."""
    delta = t_ends - t_starts
    alpha = 1 - torch.exp(-densities * delta)
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros(1), densities * delta]), 0)[:-1])
    return transmittance * alpha


def test_packed_weights_equal_per_ray_volume_rendering():
    generator = torch.Generator().manual_seed(0)
    counts = [5, 0, 3, 7]
    ray_indices = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    t_starts = torch.rand(len(ray_indices), generator=generator).sort()[0]
    t_ends = t_starts + 0.1
    densities = torch.rand(len(ray_indices), generator=generator) * 5
    weights = packed_weights(t_starts, t_ends, densities, ray_indices, num_rays=4)
    for ray in range(4):
        mask = ray_indices == ray
        torch.testing.assert_close(weights[mask], padded_weights(t_starts[mask], t_ends[mask], densities[mask]))


def packed_rays(counts, generator):
    """Packed samples of rays with `counts` samples each, ordered along each ray, and a density and
    colour at each."""
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    t_starts = ray_indices + torch.rand(len(ray_indices), generator=generator).sort()[0]  # ordered within each ray
    samples = PackedSamples(ray_indices, t_starts, t_starts + 0.05)
    return samples, torch.rand(len(ray_indices), generator=generator) * 40, torch.rand(len(ray_indices), 3, generator=generator)


@pytest.mark.parametrize("samples_per_round", [1, 3, 100])
def test_front_to_back_rounds_composite_every_sample_as_packed_weights_do(samples_per_round):
    counts = [5, 0, 3, 17, 1]
    samples, densities, colours = packed_rays(counts, torch.Generator().manual_seed(0))
    calls = []

    def field_at(chosen):
        calls.append(chosen)
        return densities[chosen], colours[chosen]

    result = composite_front_to_back(samples, len(counts), field_at, samples_per_round, min_transmittance=0.0)
    weights = packed_weights(samples.t_starts, samples.t_ends, densities, samples.ray_indices, len(counts))
    expected_rgb = torch.zeros(len(counts), 3).index_add_(0, samples.ray_indices, weights[:, None] * colours)
    torch.testing.assert_close(result.weighted_rgb, expected_rgb)
    torch.testing.assert_close(result.accumulation, torch.zeros(len(counts)).index_add_(0, samples.ray_indices, weights))
    assert result.evaluated.tolist() == counts
    # Every sample evaluated once, and no call holds more than a round of each ray.
    assert sorted(torch.cat(calls).tolist()) == list(range(sum(counts)))
    assert max(len(chosen) for chosen in calls) <= len(counts) * samples_per_round


def test_front_to_back_stops_a_ray_behind_an_opaque_surface_and_loses_less_than_the_threshold():
    counts = [40, 40, 40]
    samples, densities, colours = packed_rays(counts, torch.Generator().manual_seed(1))
    densities[:40] = 0.01  # ray 0 is nearly empty; rays 1 and 2 meet the random densities
    densities[40 + 4] = densities[80 + 10] = 1e4  # an opaque sample on rays 1 and 2
    full = composite_front_to_back(samples, 3, lambda c: (densities[c], colours[c]), 4, min_transmittance=0.0)
    stopped = composite_front_to_back(samples, 3, lambda c: (densities[c], colours[c]), 4, min_transmittance=1e-4)
    assert stopped.evaluated.tolist() == [40, 8, 12]  # the round holding the opaque sample is the last
    assert (full.weighted_rgb - stopped.weighted_rgb).abs().max() < 1e-4 * 3
    assert (full.accumulation - stopped.accumulation).abs().max() < 1e-4


def rays_towards_the_centre(count: int, generator: torch.Generator):
    origins = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1) * 4
    targets = (torch.rand(count, 3, generator=generator) - 0.5) * 1.5
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    return origins, directions, torch.full((count, 1), 2.0), torch.full((count, 1), 6.0)


def ball_density(points: torch.Tensor) -> torch.Tensor:
    return (points.norm(dim=-1, keepdim=True) < 0.6).float() * 100.0


def test_a_full_grid_marches_each_ray_at_the_step_through_the_box():
    grid = OccupancyGrid(BOX, OccupancyGridSettings(resolution=16, render_step_size=0.05))
    origins, directions, near, far = rays_towards_the_centre(64, torch.Generator().manual_seed(1))
    samples = grid.sample(origins, directions, near, far, stratified=False)
    assert torch.all(samples.ray_indices[1:] >= samples.ray_indices[:-1])  # packed by ray
    torch.testing.assert_close(samples.t_ends - samples.t_starts, torch.full_like(samples.t_starts, 0.05))
    midpoints = origins[samples.ray_indices] + directions[samples.ray_indices] * ((samples.t_starts + samples.t_ends) / 2)[:, None]
    assert midpoints.abs().max() <= 1.5 and samples.t_starts.min() >= 2.0 and samples.t_ends.max() <= 6.0
    # Every ray aimed inside the box crosses at least a unit of it, so gets 20 or more samples.
    assert torch.bincount(samples.ray_indices, minlength=64).min() >= 20


def test_updates_keep_the_cells_the_density_fills_and_samples_only_there():
    settings = OccupancyGridSettings(resolution=16, render_step_size=0.05, update_every=4, warmup_steps=8)
    grid = OccupancyGrid(BOX, settings)
    grid.train()
    for step in range(0, 9):
        grid.update(step, ball_density)
    centres = BOX[0] + (torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * (3 / 16)
    inside = centres.norm(dim=-1) < 0.6 - 0.1
    outside = centres.norm(dim=-1) > 0.6 + 0.2
    assert grid.occupied[inside].all() and not grid.occupied[outside].any()
    origins, directions, near, far = rays_towards_the_centre(64, torch.Generator().manual_seed(2))
    samples = grid.sample(origins, directions, near, far, stratified=True)
    midpoints = origins[samples.ray_indices] + directions[samples.ray_indices] * ((samples.t_starts + samples.t_ends) / 2)[:, None]
    assert len(midpoints) > 0 and midpoints.norm(dim=-1).max() < 0.6 + 0.2 * math.sqrt(3)


GRID = dict(occupancy_resolution=8, render_step_size=0.1)


def tiny_grid_model(kind: str = "diner", **overrides):
    """bn-diner, or bn-nerf with its occupancy sampler, at a tiny size."""
    if kind == "diner":
        config = BNDINERModelConfig(**{**GRID, "table_resolution": 8, "table_features": 2, "log2_table_entries": 10,
                                       "trunk_width": 16, "colour_width": 16, **overrides})
    else:
        config = BNNeRFModelConfig(**{**GRID, "sampler": "occupancy", "trunk_depth": 2, "trunk_width": 16,
                                      "skip_connections": (), "colour_depth": 1, "colour_width": 16, **overrides})
    return config.setup(scene_box=SceneBox(aabb=BOX), num_train_data=1)


GRID_MODELS = pytest.mark.parametrize("kind, label", [("diner", "bn-diner"), ("nerf", "bn-nerf")])


@GRID_MODELS
def test_an_emptied_grid_is_refilled_and_the_recovery_logged(kind, label, caplog):
    model = tiny_grid_model(kind)
    model.train()
    model.density_at = lambda points: torch.zeros(len(points), 1)  # a field that has gone transparent
    [update] = model.get_training_callbacks(None)
    with caplog.at_level(logging.WARNING, logger="bn_nerf.nerf.models.grid_model"):
        update.func(step=0)
    assert model.occupancy_grid.occupied_fraction == 1.0
    assert "occupancy grid emptied" in caplog.text


@GRID_MODELS
def test_a_training_batch_without_samples_refills_the_grid_and_says_so(kind, label, caplog):
    model = tiny_grid_model(kind)
    model.train()
    model.occupancy_grid.estimator.binaries.zero_()  # no cell occupied: every ray misses
    origins, directions, near, far = rays_towards_the_centre(16, torch.Generator().manual_seed(4))
    from nerfstudio.cameras.rays import RayBundle

    rays = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(16, 1), nears=near, fars=far)
    with caplog.at_level(logging.WARNING, logger="bn_nerf.nerf.models.grid_model"):
        outputs = model.get_outputs(rays)
    assert int(outputs["num_samples_per_ray"].sum()) == 0
    assert "no sample of a training batch" in caplog.text and model.occupancy_grid.occupied_fraction == 1.0
    assert int(model.get_outputs(rays)["num_samples_per_ray"].sum()) > 0


@GRID_MODELS
def test_a_loss_that_is_not_finite_stops_training_with_one_line(kind, label, capsys):
    model = tiny_grid_model(kind)
    outputs = {"rgb": torch.full((4, 3), float("nan")), "accumulation": torch.ones(4, 1)}
    with pytest.raises(SystemExit):
        model.get_loss_dict(outputs, {"image": torch.rand(4, 4)})
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {label}: the loss became nan") and "\n" not in error


@GRID_MODELS
def test_batchnorm_sees_exactly_the_samples_the_grid_keeps(kind, label):
    torch.manual_seed(0)
    model = tiny_grid_model(kind)
    model.train()
    model.occupancy_grid.estimator.binaries.reshape(-1)[::2] = False  # half of the box empty
    seen = []
    first_norm = model.field.trunk.norms[0]
    first_norm.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0].shape[0]))
    origins, directions, near, far = rays_towards_the_centre(32, torch.Generator().manual_seed(3))
    from nerfstudio.cameras.rays import RayBundle

    rays = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(32, 1), nears=near, fars=far)
    outputs = model.get_outputs(rays)
    kept = int(outputs["num_samples_per_ray"].sum())
    model.occupancy_grid.reset()
    marched = int(model.get_outputs(rays)["num_samples_per_ray"].sum())  # every cell occupied
    assert seen[0] == kept and 0.25 * marched < kept < 0.75 * marched


def test_batchnorm_on_and_off_differ_by_the_switch_alone():
    """The same seed gives the BN-off model exactly the BN-on model's weights, less BN's own."""
    for kind in ("diner", "nerf"):
        states = {}
        for normalization in ("batch", "none"):
            torch.manual_seed(0)
            states[normalization] = tiny_grid_model(kind, normalization=normalization).state_dict()
        batchnorm_keys = {key for key in states["batch"] if ".norms." in key}
        assert batchnorm_keys and batchnorm_keys.isdisjoint(states["none"])
        assert set(states["batch"]) - batchnorm_keys == set(states["none"])
        for key, value in states["none"].items():
            torch.testing.assert_close(states["batch"][key], value, rtol=0, atol=0)


def batchnorm_inputs(field, positions: torch.Tensor) -> list[torch.Tensor]:
    inputs = []
    for module in field.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.register_forward_pre_hook(lambda _module, args: inputs.append(args[0].detach()))
    count = len(positions)
    directions = torch.nn.functional.normalize(torch.randn(count, 3), dim=-1)
    samples = RaySamples(frustums=Frustums(origins=positions, directions=directions, starts=torch.zeros(count, 1),
                                           ends=torch.zeros(count, 1), pixel_area=torch.ones(count, 1)))
    field.train()
    field(samples)
    return inputs


@pytest.mark.parametrize("kind", ["nerf", "diner"])
@pytest.mark.parametrize("placement", ["after", "before"])
def test_batchnorm_follows_the_relu_or_precedes_it_in_both_nerf_fields(kind, placement):
    """After the ReLU (the paper's text) BN normalizes non-negative activations; before it (the
    authors' code) it normalizes the Linear's signed output."""
    torch.manual_seed(0)
    if kind == "nerf":
        field = make_nerf_field(norm_placement=placement, trunk_depth=3, trunk_width=32, skip_connections=(2,),
                                colour_depth=1, colour_width=16)
    else:
        field = make_diner_field(BOX, norm_placement=placement, table_resolution=8, log2_table_entries=10,
                                 trunk_width=32, colour_width=16)
        torch.nn.init.uniform_(field.position_encoding.table, -1, 1)
    inputs = batchnorm_inputs(field, torch.rand(256, 3) * 2 - 1)
    assert len(inputs) == sum(isinstance(m, torch.nn.BatchNorm1d) for m in field.modules()) >= 3
    for values in inputs:
        if placement == "after":
            assert values.min() >= 0
        else:
            assert values.min() < 0 < values.max()


def test_smoothness_penalty_measures_neighbour_differences_of_a_dense_table():
    table = FeatureTable(12, 2, 12)
    with torch.no_grad():
        table.table.copy_(torch.arange(12.0)[None, None, None, :].expand(2, 12, 12, 12) * 0.5)  # ramp along x
    # Steps of 0.5 along x, none along y and z: (0.25 + 0 + 0) / 3 on any block.
    assert float(table.smoothness_penalty(block=5)) == pytest.approx(0.25 / 3)
    with torch.no_grad():
        table.table.fill_(0.3)
    assert float(table.smoothness_penalty(block=5)) == 0.0
    with pytest.raises(ValueError, match="dense torch table"):
        FeatureTable(9, 2, 9).smoothness_penalty(block=5)
    # A model asked for the prior on a hashed table says so when it is built, not at its first step.
    with pytest.raises(ValueError, match="table_smoothness needs a dense torch table"):
        tiny_grid_model("diner", table_resolution=16, table_smoothness=1.0)


@GRID_MODELS
def test_rendering_stops_rays_at_opaque_surfaces_and_gives_the_image_of_every_sample(kind, label):
    """Eval-mode rendering (ns-eval, ns-render, the viewer) goes front to back and stops each ray
    behind what it cannot see through; the image is the one compositing every sample gives."""
    torch.manual_seed(0)
    model = tiny_grid_model(kind, eval_samples_per_round=4)  # rays here cross ~33 samples
    with torch.no_grad():
        model.field.density_head.net.bias.add_(6.0)  # a dense field: rays turn opaque within a few samples
    model.eval()
    origins, directions, near, far = rays_towards_the_centre(64, torch.Generator().manual_seed(5))
    from nerfstudio.cameras.rays import RayBundle

    rays = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(64, 1), nears=near, fars=far)
    with torch.no_grad():
        outputs = model.get_outputs(rays)
        samples, _ = model.march(rays, stratified=False)
        field_outputs = model.field(model.ray_samples(rays, samples))
        weights = packed_weights(samples.t_starts, samples.t_ends, field_outputs[FieldHeadNames.DENSITY][:, 0],
                                 samples.ray_indices, 64)[:, None]
        every_sample = model.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights,
                                          ray_indices=samples.ray_indices, num_rays=64)
    # DINER's rays first cross empty space outside its box; past it, a round or two of samples remains.
    assert int(outputs["num_samples_per_ray"].sum()) < 0.7 * len(samples.ray_indices)
    assert (outputs["rgb"] - every_sample).abs().max() < 1e-3
