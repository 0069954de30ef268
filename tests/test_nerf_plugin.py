"""The nerfstudio plugin on a tiny generated scene, on the CPU: discovery, the BN-off field equals
vanilla-nerf's, training lowers the loss, checkpoints carry exact BN statistics, eval mode renders
as well as train mode, checkpoints load under torch's default weights_only, and ns-eval /
ns-render work on them.

One trained checkpoint (module fixture) serves every test that needs one: training is what costs."""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import tyro

from nerfstudio.cameras.rays import Frustums, RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.fields.vanilla_nerf_field import NeRFField
from nerfstudio.model_components.ray_samplers import UniformSampler
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.models.vanilla_nerf import NeRFModel
from nerfstudio.plugins.registry import discover_methods
from nerfstudio.scripts import eval as ns_eval
from nerfstudio.scripts import render as ns_render
from nerfstudio.utils.eval_utils import eval_setup

from bn_nerf.nerf import method_configs
from bn_nerf.nerf.data.scene import write_scene
from bn_nerf.nerf.fields.radiance_field import (make_diner_field, make_nerf_field, nerf_direction_encoding,
                                                nerf_position_encoding)
from bn_nerf.nerf.model_components.metrics import psnr
from bn_nerf.nerf.models.grid_model import OccupancyGridModel
from bn_nerf.nerf.models.nerf_model import BNNeRFModel

TINY_MODEL = dict(
    sampler="hierarchical",
    trunk_depth=3,
    trunk_width=64,
    skip_connections=(2,),
    colour_depth=1,
    colour_width=32,
    num_coarse_samples=16,
    num_importance_samples=16,
    eval_num_rays_per_chunk=1024,
    batchnorm_calibration_rays=1024,
)
TINY_GRID_NERF = dict(
    sampler="occupancy",
    trunk_depth=3,
    trunk_width=64,
    skip_connections=(2,),
    colour_depth=1,
    colour_width=32,
    occupancy_resolution=16,
    render_step_size=0.05,
    occupancy_warmup_steps=8,
    occupancy_update_every=4,
    eval_num_rays_per_chunk=1024,
    batchnorm_calibration_rays=1024,
)
TINY_DINER = dict(trunk_width=32, colour_width=16, table_resolution=16, log2_table_entries=14, occupancy_resolution=16,
                  render_step_size=0.05, eval_num_rays_per_chunk=1024, batchnorm_calibration_rays=1024)



@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    scene = tmp_path_factory.mktemp("scene")
    write_scene(scene, size=16, views={"train": 6, "val": 1, "test": 2}, seed=1)
    return scene


def make_trainer(method: str, scene: Path, output: Path, model_overrides: dict, normalization: str = "batch"):
    """The method's registered trainer configuration, shrunk for a test, set up on the CPU."""
    config = copy.deepcopy(discover_methods()[0][method])
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = output
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = 10**6
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.train_num_rays_per_batch = 256
    config.pipeline.datamanager.eval_num_rays_per_batch = 256
    for name, value in dict(model_overrides, normalization=normalization).items():
        setattr(config.pipeline.model, name, value)
    config.set_timestamp()
    torch.manual_seed(0)
    random.seed(0)  # nerfstudio's image loader draws its image order with Python's random
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    config.save_config()
    return trainer


def train_steps(trainer, steps: int) -> list[float]:
    """Training steps as nerfstudio's Trainer.train runs them: callbacks (bn-diner's occupancy-grid
    updates) before and after each iteration."""
    losses = []
    for step in range(steps):
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        losses.append(float(trainer.train_iteration(step)[0].detach()))
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    return losses


def train_steps_from(trainer, step: int) -> None:
    """One training step as nerfstudio's Trainer.train runs it, callbacks included."""
    for location in (TrainingCallbackLocation.BEFORE_TRAIN_ITERATION, TrainingCallbackLocation.AFTER_TRAIN_ITERATION):
        if location == TrainingCallbackLocation.AFTER_TRAIN_ITERATION:
            trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=location)


def image_rays(pipeline, image_index: int = 0) -> tuple[RayBundle, torch.Tensor]:
    """All rays of one training image and its pixels composited on the white background."""
    dataset = pipeline.datamanager.train_dataset
    rays = dataset.cameras.generate_rays(camera_indices=image_index)
    image = pipeline.model.renderer_rgb.blend_background(dataset[image_index]["image"])
    return rays, image


@pytest.fixture(scope="module")
def trained_bn_nerf(tiny_scene, tmp_path_factory):
    """bn-nerf-cpu shrunk further, 40 steps, then a checkpoint (which re-estimates BN statistics)."""
    trainer = make_trainer("bn-nerf-cpu", tiny_scene, tmp_path_factory.mktemp("runs"), TINY_MODEL)
    losses = train_steps(trainer, 40)
    trainer.save_checkpoint(40)
    return trainer, losses


@pytest.fixture(scope="module")
def trained_grid_bn_nerf(tiny_scene, tmp_path_factory):
    """bn-nerf-cpu (the occupancy sampler) shrunk further, 60 steps, then a checkpoint."""
    trainer = make_trainer("bn-nerf-cpu", tiny_scene, tmp_path_factory.mktemp("grid-runs"), TINY_GRID_NERF)
    losses = train_steps(trainer, 60)
    trainer.save_checkpoint(60)
    return trainer, losses


def eval_view_psnr_and_constant_psnr(trainer) -> tuple[float, float]:
    """PSNR of the eval-mode render of the held-out view, and of the best constant colour there."""
    pipeline = trainer.pipeline
    dataset = pipeline.datamanager.eval_dataset
    model = pipeline.model
    truth = model.renderer_rgb.blend_background(dataset[0]["image"])
    model.eval()
    with torch.no_grad():
        rendered = model.get_outputs_for_camera_ray_bundle(dataset.cameras.generate_rays(camera_indices=0))["rgb"]
    constant = truth.reshape(-1, 3).mean(0).expand_as(truth)
    return float(psnr(rendered, truth)), float(psnr(constant, truth))


def test_plugins_are_discovered_with_descriptions():
    configs, descriptions = discover_methods()
    for method in ("bn-nerf", "bn-diner", "bn-nerf-cpu", "bn-diner-cpu"):
        assert configs[method].method_name == method
        assert descriptions[method]


def test_bn_nerf_is_vanilla_nerf_with_batchnorm():
    """The registered bn-nerf's hierarchical sampler takes vanilla-nerf's samples, and its field with
    BN off computes exactly what vanilla-nerf's NeRFField computes with the same weights."""
    ours = method_configs.bn_nerf.config
    from nerfstudio.configs.method_configs import method_configs as nerfstudio_methods

    vanilla = nerfstudio_methods["vanilla-nerf"]
    assert ours.pipeline.model.num_coarse_samples == vanilla.pipeline.model.num_coarse_samples == 64
    assert ours.pipeline.model.num_importance_samples == vanilla.pipeline.model.num_importance_samples == 128

    torch.manual_seed(0)
    reference = NeRFField(position_encoding=nerf_position_encoding(), direction_encoding=nerf_direction_encoding())
    field = make_nerf_field(normalization="none")
    assert sum(p.numel() for p in field.parameters()) == sum(p.numel() for p in reference.parameters())
    with torch.no_grad():
        reference_linears = list(reference.mlp_base.layers) + list(reference.mlp_head.layers)
        our_linears = list(field.trunk.linears) + list(field.colour_network.linears)
        for index, (theirs, mine) in enumerate(zip(reference_linears, our_linears)):
            weight = theirs.weight
            if index == 4:  # nerfstudio concatenates [input, features] at the skip; we concatenate [features, input]
                encoded = reference.position_encoding.get_out_dim()
                weight = torch.cat([weight[:, encoded:], weight[:, :encoded]], dim=1)
            mine.weight.copy_(weight)
            mine.bias.copy_(theirs.bias)
        field.density_head.load_state_dict(reference.field_output_density.state_dict())
        field.rgb_head.load_state_dict(reference.field_heads[0].state_dict())
    rays = RayBundle(
        origins=torch.tensor([[0.0, 0.0, 4.0]]).repeat(8, 1),
        directions=torch.nn.functional.normalize(torch.randn(8, 3) * 0.2 + torch.tensor([0.0, 0.0, -1.0]), dim=-1),
        pixel_area=torch.ones(8, 1),
        nears=torch.full((8, 1), 2.0),
        fars=torch.full((8, 1), 6.0),
    )
    samples = UniformSampler(num_samples=16)(rays)
    expected, got = reference(samples), field(samples)
    for head in (FieldHeadNames.DENSITY, FieldHeadNames.RGB):
        torch.testing.assert_close(got[head], expected[head], rtol=1e-5, atol=1e-6)


def test_bn_nerf_model_subclasses_vanilla_and_switches_batchnorm(trained_bn_nerf, tiny_scene, tmp_path):
    trainer, _ = trained_bn_nerf
    model = trainer.pipeline.model
    assert isinstance(model, NeRFModel) and model.has_batchnorm
    baseline = make_trainer("bn-nerf-cpu", tiny_scene, tmp_path, TINY_MODEL, normalization="none")
    assert not baseline.pipeline.model.has_batchnorm


def test_bn_nerf_training_lowers_the_loss(trained_bn_nerf):
    _, losses = trained_bn_nerf
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("trained", ["trained_bn_nerf", "trained_grid_bn_nerf"])
def test_each_sampler_renders_a_held_out_view_far_better_than_any_constant_colour(trained, request):
    """Both of bn-nerf's samplers, after a few dozen steps on the tiny scene, in eval mode from the
    checkpoint's statistics. Measured: hierarchical 14.4 dB, occupancy 18.1 dB, against 8.9 dB for the
    best constant colour; a sampler that hands the field another ray's samples reached 11.6 dB."""
    trainer, _ = request.getfixturevalue(trained)
    rendered, constant = eval_view_psnr_and_constant_psnr(trainer)
    assert rendered > constant + 4.0, (rendered, constant)


def test_a_checkpoint_loads_only_with_the_sampler_it_was_trained_with(trained_grid_bn_nerf, tmp_path, capsys):
    """The occupancy sampler's checkpoint renders back through eval_setup (as ns-eval loads it); asked
    for with the hierarchical sampler it is refused on one line naming both."""
    trainer, _ = trained_grid_bn_nerf
    config_path = trainer.base_dir / "config.yml"
    _, pipeline, _, step = eval_setup(config_path, test_mode="test")
    assert step == 60 and pipeline.model.sampler == "occupancy"
    rays, _ = image_rays(trainer.pipeline)
    trainer.pipeline.model.eval()
    expected = trainer.pipeline.model.get_outputs_for_camera_ray_bundle(rays)["rgb"]
    torch.testing.assert_close(pipeline.model.get_outputs_for_camera_ray_bundle(rays)["rgb"], expected)

    config_text = config_path.read_text()
    assert "sampler: occupancy" in config_text
    mismatched = tmp_path / "config.yml"
    mismatched.write_text(config_text.replace("sampler: occupancy", "sampler: hierarchical"))
    with pytest.raises(SystemExit) as exit_info:
        eval_setup(mismatched, test_mode="test")
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in error
    assert "trained with the occupancy sampler" in error and "asks for the hierarchical sampler" in error


def test_bn_nerf_sizes_its_steps_by_a_sample_budget_within_bounds(tiny_scene, tmp_path):
    """bn-nerf's GPU default keeps a step's samples near its budget by rescaling the ray count, as
    nerfacc does, between the pipeline's bounds, and a batch without samples changes nothing."""
    trainer = make_trainer("bn-nerf", tiny_scene, tmp_path, TINY_GRID_NERF)
    pipeline = trainer.pipeline
    pipeline.config.target_num_samples = 1 << 15
    sampler = pipeline.datamanager.train_pixel_sampler
    assert sampler.num_rays_per_batch == pipeline.config.min_num_rays_per_batch  # the budget allows fewer at first
    counts = []
    for step in range(6):
        train_steps_from(trainer, step)
        counts.append(sampler.num_rays_per_batch)
        assert pipeline.config.min_num_rays_per_batch <= counts[-1] <= pipeline.config.max_num_rays_per_batch
    assert len(set(counts)) > 1  # it follows the samples each step took
    pipeline._update_dynamic_num_rays_per_batch(0)
    pipeline._update_pixel_samplers()
    assert sampler.num_rays_per_batch == counts[-1]

    # The hierarchical sampler takes a fixed number of samples a ray: the configured ray count stands.
    hierarchical = make_trainer("bn-nerf", tiny_scene, tmp_path, TINY_MODEL)
    for step in range(2):
        train_steps_from(hierarchical, step)
        assert hierarchical.pipeline.datamanager.train_pixel_sampler.num_rays_per_batch == 256


class RecordedWarnings(logging.Handler):
    """The messages of the warnings a logger emits while this handler is attached to it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def trained_bn_diner(tiny_scene, tmp_path_factory):
    """bn-diner-cpu (its CPU grid: updates every 8 steps, decay 0.8) shrunk further, 96 steps, and
    the warnings its grid-rendered model logged meanwhile."""
    trainer = make_trainer("bn-diner-cpu", tiny_scene, tmp_path_factory.mktemp("diner-runs"), TINY_DINER)
    warnings = RecordedWarnings()
    grid_model_logger = logging.getLogger(OccupancyGridModel.__module__)
    grid_model_logger.addHandler(warnings)
    try:
        losses = train_steps(trainer, 96)
    finally:
        grid_model_logger.removeHandler(warnings)
    return trainer, losses, warnings.messages


def test_bn_diner_training_lowers_the_loss(trained_bn_diner):
    _, losses, _ = trained_bn_diner
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_bn_diner_training_empties_most_of_its_occupancy_grid_without_refilling_it(trained_bn_diner):
    """The grid forgets the empty space the field learns (the scene fills under a tenth of the box)
    and is refilled only when it has emptied altogether. Measured after 96 steps: 39 % of the cells
    occupied, no refill; a grid refilled at every step stays full, logging 96 refills (and every
    step then marches every cell, several times slower)."""
    trainer, _, warnings = trained_bn_diner
    refills = [message for message in warnings if "occupied again" in message]
    assert trainer.pipeline.model.occupancy_grid.occupied_fraction < 0.6
    assert len(refills) <= 2, refills[:3]



def samples_at(positions: torch.Tensor) -> RaySamples:
    """One zero-length sample per position, on rays looking down -z."""
    count = len(positions)
    directions = torch.tensor([[0.0, 0.0, -1.0]]).repeat(count, 1)
    frustums = Frustums(
        origins=positions, directions=directions, starts=torch.zeros(count, 1), ends=torch.zeros(count, 1),
        pixel_area=torch.ones(count, 1),
    )
    return RaySamples(frustums=frustums)


def test_diner_field_is_empty_outside_the_scene_box_and_keeps_those_samples_out_of_batchnorm():
    """Outside the box the table has no entries (a hashed one would alias cells inside): there the field is empty, and the
    samples there do not enter BN's batch statistics, so the scene's samples render the same whatever
    lies past the box."""
    torch.manual_seed(0)
    field = make_diner_field(torch.tensor([[-1.5] * 3, [1.5] * 3]), normalization="batch", table_resolution=16, log2_table_entries=10)
    field.train()
    inside = torch.rand(64, 3) * 2.8 - 1.4
    outside = torch.rand(32, 3) * 2.8 - 1.4
    outside[:, 2] = 2.0 + torch.rand(32)  # past the box's top
    elsewhere_outside = outside.clone()
    elsewhere_outside[:, 2] = -5.0
    with torch.no_grad():
        first = field(samples_at(torch.cat([inside, outside])))
        second = field(samples_at(torch.cat([inside, elsewhere_outside])))
        alone = field(samples_at(inside))
    assert (first[FieldHeadNames.DENSITY][64:] == 0).all() and (first[FieldHeadNames.RGB][64:] == 0).all()
    # Inside, the table and the networks answer (no constant), exactly as for the inside samples alone.
    assert first[FieldHeadNames.DENSITY][:64].std() > 0
    for head in (FieldHeadNames.DENSITY, FieldHeadNames.RGB):
        torch.testing.assert_close(first[head][:64], alone[head], rtol=0, atol=0)
        torch.testing.assert_close(second[head][:64], alone[head], rtol=0, atol=0)

def all_training_rays(pipeline) -> tuple[RayBundle, torch.Tensor]:
    """Every pixel's ray of every training image, flattened, with its colour on the background."""
    dataset = pipeline.datamanager.train_dataset
    coords = dataset.cameras.get_image_coords().reshape(-1, 2)
    count = len(dataset)
    camera_indices = torch.arange(count).repeat_interleave(len(coords))[:, None]
    rays = dataset.cameras.generate_rays(camera_indices=camera_indices, coords=coords.repeat(count, 1))
    pixels = torch.cat([image_rays(pipeline, index)[1].reshape(-1, 3) for index in range(count)])
    return rays, pixels


@contextmanager
def batch_statistics_mode(model, stratified: bool = True):
    """Train mode, in which BN normalizes with the statistics of the batch it is given, without its
    side effect: the running statistics a train-mode pass updates are restored afterwards, so the
    checkpoint's re-estimated ones stay what the other tests see. `stratified=False` places samples
    as eval mode does. The model is left in eval mode."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    saved = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    model.sampler_uniform.train_stratified = model.sampler_pdf.train_stratified = stratified
    model.train()
    try:
        with torch.no_grad():
            yield
    finally:
        model.eval()
        model.sampler_uniform.train_stratified = model.sampler_pdf.train_stratified = True
        for layer, (mean, variance) in zip(layers, saved):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(variance)


@contextmanager
def batchnorm_alone_in_train_mode(model):
    """BN normalizing with the statistics of the batch it is given while everything else runs as in
    eval mode (sample placement without jitter, for either sampler), with no side effect: the running
    statistics a train-mode pass updates are restored afterwards, so the checkpoint's re-estimated
    ones stay what the other tests see. The model is left in eval mode."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    saved = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    model.eval()
    for layer in layers:
        layer.train()
    try:
        with torch.no_grad():
            yield
    finally:
        model.eval()
        for layer, (mean, variance) in zip(layers, saved):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(variance)


@pytest.mark.parametrize("trained, model_options", [("trained_bn_nerf", TINY_MODEL), ("trained_grid_bn_nerf", TINY_GRID_NERF)])
def test_checkpoint_carries_the_batch_statistics_of_the_training_rays(trained, model_options, request):
    """Before the checkpoint was written, every BN layer's running statistics were replaced by the
    statistics its input has in train mode over the training rays under the final weights -- what
    the training batches normalized with -- rather than a lagging exponential average.

    Measured here, the worst layer's median deviation (standard deviations, and variance ratio - 1):
    hierarchical sampler 0.006, occupancy sampler 0.009. Without the re-estimation (the running
    averages of training) 0.24 and 0.10; for the hierarchical sampler, calibrating on samples over
    [0, far] instead of training's [near, far] gave 0.12 and 0.08."""
    trainer, _ = request.getfixturevalue(trained)
    model = trainer.pipeline.model
    rays, _ = all_training_rays(trainer.pipeline)
    batch_statistics = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)}

    def record(name):
        def hook(_module, inputs):
            batch_statistics[name] = (inputs[0].mean(0), inputs[0].var(0, unbiased=False))

        return hook

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in layers.items()]
    try:
        # One batch of all training rays, samples placed as in eval mode. A grid model's eval-mode
        # rendering goes front to back in rounds, each a batch of its own: its samples are marched and
        # sent through the field in one batch here.
        with batchnorm_alone_in_train_mode(model):
            if model_options["sampler"] == "occupancy":
                collided = model.collider(rays)
                samples, _ = model.march(collided, stratified=False)
                model.field(model.ray_samples(collided, samples))
            else:
                model(rays)
    finally:
        for handle in handles:
            handle.remove()
    fields = 2 if model_options["sampler"] == "hierarchical" else 1  # coarse and fine, or the one field
    assert len(batch_statistics) == len(layers) == fields * (model_options["trunk_depth"] + model_options["colour_depth"])
    deviations = {}
    for name, layer in layers.items():
        mean, variance = batch_statistics[name]
        scale = layer.running_var.sqrt().clamp_min(1e-3)
        deviations[name] = max(float(((mean - layer.running_mean).abs() / scale).median()),
                               float((variance / layer.running_var.clamp_min(1e-6)).median().sub(1).abs()))
    worst = max(deviations, key=deviations.get)
    assert deviations[worst] < 0.03, (worst, deviations[worst])


def test_eval_mode_renders_training_rays_as_well_as_train_mode(trained_bn_nerf):
    """What the checkpoint deploys (eval mode, re-estimated statistics) scores within 0.2 dB of train
    mode on the same 1024 random training rays rendered as ONE batch, normalized with that batch's
    own BN statistics as a training step normalizes.

    Both renders place samples alike (eval's bin centres), so the gap is BN's alone: training's
    stratified jitter by itself moves the 16-sample coarse PSNR by up to 0.16 dB, with or without BN.
    Why 0.2 dB (4.7 % of the MSE): over eight trained models the measured gap was at most 0.11 dB
    (the calibration's finite ray sample); with nerfstudio's collider, which moves the near plane
    to 0 outside training, it was 1.5-3.5 dB."""
    trainer, _ = trained_bn_nerf
    model = trainer.pipeline.model
    dataset = trainer.pipeline.datamanager.train_dataset
    coords = dataset.cameras.get_image_coords().reshape(-1, 2)
    generator = torch.Generator().manual_seed(7)
    cameras = torch.randint(len(dataset), (1024,), generator=generator)
    pixel_indices = torch.randint(len(coords), (1024,), generator=generator)
    images = torch.stack([image_rays(trainer.pipeline, index)[1].reshape(-1, 3) for index in range(len(dataset))])
    pixels = images[cameras, pixel_indices]

    def rays() -> RayBundle:
        # A fresh bundle per render: the collider writes near/far into the bundle it is given, and a
        # bundle reused from a train-mode pass would hide an eval-mode near plane of its own.
        return dataset.cameras.generate_rays(camera_indices=cameras[:, None], coords=coords[pixel_indices])

    with batch_statistics_mode(model, stratified=False):
        train_mode = model(rays())
    with torch.no_grad():
        eval_mode = model(rays())
    for level in ("coarse", "fine"):
        train_psnr = float(psnr(train_mode[f"rgb_{level}"], pixels))
        eval_psnr = float(psnr(eval_mode[f"rgb_{level}"], pixels))
        assert abs(eval_psnr - train_psnr) < 0.2, (level, train_psnr, eval_psnr)


def test_eval_mode_samples_the_training_interval(trained_bn_nerf):
    """Eval renders (ns-eval, ns-render, the viewer) keep the near plane training used."""
    model = trained_bn_nerf[0].pipeline.model
    rays, _ = image_rays(trained_bn_nerf[0].pipeline)
    model.eval()
    with torch.no_grad():
        assert torch.all(model.collider(rays.flatten()).nears == model.config.collider_params["near_plane"])


def test_checkpoint_loads_with_default_torch_load_and_renders_the_same(trained_bn_nerf):
    trainer, _ = trained_bn_nerf
    checkpoint_path = next(trainer.checkpoint_dir.glob("*.ckpt"))
    checkpoint = torch.load(checkpoint_path)  # torch >= 2.6 default: weights_only=True
    assert any(key.endswith("running_mean") for key in checkpoint["pipeline"])

    config_path = trainer.base_dir / "config.yml"
    _, pipeline, _, step = eval_setup(config_path, test_mode="test")
    assert step == 40 and isinstance(pipeline.model, BNNeRFModel)
    rays, _ = image_rays(trainer.pipeline)
    trainer.pipeline.model.eval()
    expected = trainer.pipeline.model.get_outputs_for_camera_ray_bundle(rays)["rgb_fine"]
    torch.testing.assert_close(pipeline.model.get_outputs_for_camera_ray_bundle(rays)["rgb_fine"], expected)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render refuses to start without ffmpeg")
def test_ns_eval_and_ns_render_work_on_the_checkpoint(trained_bn_nerf, tmp_path):
    # The two commands' own entry points (tyro parsing and main()), in this process: a fresh
    # interpreter importing nerfstudio costs several seconds per command on a loaded CPU.
    trainer, _ = trained_bn_nerf
    config_path = trainer.base_dir / "config.yml"
    metrics_path = tmp_path / "eval.json"
    tyro.cli(ns_eval.ComputePSNR, args=["--load-config", str(config_path), "--output-path", str(metrics_path)]).main()
    results = json.loads(metrics_path.read_text())["results"]
    assert 5.0 < results["psnr"] < 60.0 and 0.0 < results["fine_ssim"] <= 1.0

    frames = tmp_path / "frames"
    # An interpolated path through the test cameras (nerfstudio 1.1.5's "spiral" path fails under
    # torch 2.14 on a float/double mix inside nerfstudio's camera_utils, for every method).
    render_args = ["interpolate", "--load-config", str(config_path), "--output-path", str(frames),
                   "--output-format", "images", "--interpolation-steps", "2", "--frame-rate", "4"]
    tyro.cli(ns_render.Commands, args=render_args).main()
    rendered = sorted(frames.glob("*.jpg")) + sorted(frames.glob("*.png"))
    assert len(rendered) >= 2


def test_models_convert_batchnorm_to_syncbatchnorm(trained_bn_nerf):
    model = copy.deepcopy(trained_bn_nerf[0].pipeline.model)
    keys = set(model.state_dict())
    model.use_sync_batchnorm()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert layers and all(isinstance(m, torch.nn.SyncBatchNorm) for m in layers)
    assert set(model.state_dict()) == keys  # checkpoints stay interchangeable


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SyncBatchNorm runs on CUDA only")
def test_syncbatchnorm_model_trains_a_step_on_cuda(trained_bn_nerf, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = copy.deepcopy(trained_bn_nerf[0].pipeline.model).cuda()
        model.use_sync_batchnorm()
        model.train()
        rays, image = image_rays(trained_bn_nerf[0].pipeline)
        outputs = model(rays.flatten().to("cuda"))
        loss = ((outputs["rgb_fine"] - image.reshape(-1, 3).cuda()) ** 2).mean()
        loss.backward()
        assert torch.isfinite(loss)
    finally:
        dist.destroy_process_group()


def test_ns_train_and_ns_eval_from_the_command_line_on_a_blender_folder(tiny_scene, tmp_path):
    """What a user types: `ns-train bn-diner-cpu --data <Blender folder>` (nerf_synthetic layout: RGBA
    PNGs, camera_angle_x, transforms_{train,val,test}.json, file paths without extension), then
    `ns-eval` on the run it leaves."""
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    shrink = [f"--pipeline.model.{name.replace('_', '-')}={value}" for name, value in TINY_DINER.items()]
    subprocess.run([bin_dir / "ns-train", "bn-diner-cpu", "--data", tiny_scene, "--output-dir", tmp_path / "runs",
                    "--max-num-iterations", "5", "--vis", "tensorboard", "--timestamp", "cli",
                    "--pipeline.datamanager.train-num-rays-per-batch", "256", *shrink],
                   check=True, capture_output=True, timeout=300, env=env)
    [config] = (tmp_path / "runs").glob("*/bn-diner-cpu/cli/config.yml")
    assert sorted(p.name for p in (config.parent / "nerfstudio_models").glob("*.ckpt")) == ["step-000000004.ckpt"]
    subprocess.run([bin_dir / "ns-eval", "--load-config", config, "--output-path", tmp_path / "eval.json"],
                   check=True, capture_output=True, timeout=300, env=env)
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["method_name"] == "bn-diner-cpu"
    assert 5.0 < results["results"]["psnr"] < 60.0 and 0.0 < results["results"]["ssim"] <= 1.0
