"""Captures whose background reaches past the scene box: the contraction the occupancy grid and the
fields share, the marching across the contracted shell, and the warning a run outside its region gets."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from PIL import Image
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.scripts import eval as ns_eval
from nerfstudio.scripts import render as ns_render

from bn_nerf.nerf.data.capture import write_capture
from bn_nerf.nerf.engine.budget import method_config, setup_trainer, train
from bn_nerf.nerf.engine.budget import test_metrics as eval_split_metrics
from bn_nerf.nerf.model_components.contraction import Contraction
from bn_nerf.nerf.model_components.health import CHECK_AT_STEP, TrainingHealth
from bn_nerf.nerf.model_components.metrics import psnr
from bn_nerf.nerf.model_components.sampling import OccupancyGrid, OccupancyGridSettings

BOX = torch.tensor([[-1.0, -0.5, -2.0], [1.0, 1.5, 0.0]])  # off-centre and not a cube, as a capture's may be


def test_contraction_keeps_the_box_and_maps_all_space_into_the_cube_and_back():
    contraction = Contraction(BOX)
    generator = torch.Generator().manual_seed(0)
    inside = BOX[0] + torch.rand(500, 3, generator=generator) * (BOX[1] - BOX[0])
    centre, half = (BOX[0] + BOX[1]) / 2, (BOX[1] - BOX[0]) / 2
    torch.testing.assert_close(contraction(inside), (inside - centre) / half)
    far_away = torch.randn(500, 3, generator=generator) * 1e4
    contracted = contraction(far_away)
    assert contracted.abs().amax(-1).max() < 2 and contracted.abs().amax(-1).min() > 1.99
    torch.testing.assert_close(contraction.inverse(contraction(inside)), inside)
    middle_distance = torch.randn(500, 3, generator=generator) * 5
    torch.testing.assert_close(contraction.inverse(contraction(middle_distance)), middle_distance, rtol=1e-4, atol=1e-4)


def test_a_full_contracted_grid_marches_the_box_at_the_step_then_the_shell_evenly_out_to_the_far_plane():
    step = 0.05
    contraction = Contraction(BOX)
    grid = OccupancyGrid(BOX, OccupancyGridSettings(resolution=16, render_step_size=step), contraction)
    generator = torch.Generator().manual_seed(1)
    rays = 32
    origins = (BOX[0] + BOX[1]) / 2 + 0.3 * torch.randn(rays, 3, generator=generator).clamp(-1, 1)
    directions = torch.nn.functional.normalize(torch.randn(rays, 3, generator=generator), dim=-1)
    near, far = torch.full((rays, 1), 0.05), torch.full((rays, 1), 1000.0)
    samples = grid.sample(origins, directions, near, far, stratified=False)
    assert grid.marcher == "torch"
    for ray in range(rays):
        mine = samples.ray_indices == ray
        starts, ends = samples.t_starts[mine], samples.t_ends[mine]
        assert (starts[1:] >= ends[:-1] - 1e-5).all(), "samples in order, not overlapping"
        midpoints = origins[ray] + directions[ray] * ((starts + ends) / 2)[:, None]
        norms = contraction(midpoints).abs().amax(-1)
        in_box = norms <= 1
        # Inside the box: one step apart from the near plane on.
        torch.testing.assert_close(ends[in_box] - starts[in_box], torch.full_like(starts[in_box], step))
        assert starts[in_box][0] == pytest.approx(0.05)
        # Across the shell: evenly spaced in the contracted coordinate, out to where the far plane is.
        shell = norms[~in_box]
        spacing = shell[1:] - shell[:-1]
        assert len(shell) >= 15 and (spacing > 0).all()
        assert spacing.max() < 2 * spacing.median() and spacing.median() < 0.1
        assert float(ends[-1]) > 100 and float(ends[-1]) <= 1000


def test_an_occupied_shell_cell_keeps_the_samples_that_fall_in_it_and_drops_the_rest():
    contraction = Contraction(BOX)
    grid = OccupancyGrid(BOX, OccupancyGridSettings(resolution=8, render_step_size=0.05), contraction)
    grid.estimator.binaries.zero_()
    # The cells of the contracted cube's +x face: where everything far along +x lands.
    grid.estimator.binaries.reshape(8, 8, 8)[7] = True
    origins = ((BOX[0] + BOX[1]) / 2).expand(2, 3)
    directions = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    samples = grid.sample(origins, directions, torch.zeros(2, 1), torch.full((2, 1), 1e3), stratified=True)
    assert set(samples.ray_indices.tolist()) == {0}
    midpoints = origins[0] + directions[0] * ((samples.t_starts + samples.t_ends) / 2)[:, None]
    assert (contraction(midpoints)[:, 0] >= 1.5).all()


def rising(steps: int, gain: float) -> list[tuple[float, float]]:
    """(PSNR, flat-colour PSNR) of each step: 12 dB flat batches, the renders rising to `gain` above them,
    after a first jump of 3 dB (a capture's mean colour, learnt in a few steps)."""
    return [(15.0 + (gain - 3.0) * min(step / 200, 1.0), 12.0) for step in range(steps)]


@pytest.mark.parametrize("steps, empty, warned, symptom", [
    (rising(CHECK_AT_STEP, 7.0), 0.1, False, None),
    # Half the rays of a Blender scene may pass through empty space to the background.
    (rising(CHECK_AT_STEP, 7.0), 0.55, False, None),
    # Learnt the mean colour and little else (a rise of 3 dB from the first steps): the scene is missed.
    (rising(CHECK_AT_STEP, 2.0), 0.1, True, "only 2.0 dB closer to the photos than one flat colour"),
    (rising(CHECK_AT_STEP, 7.0), 0.95, True, "95% of training rays meet no occupied cell"),
])
def test_a_run_that_has_not_learned_by_the_check_gets_one_warning_naming_the_symptom(steps, empty, warned, symptom, caplog):
    health = TrainingHealth("bn-diner", "box (-1, -1, -1)..(1, 1, 1), empty beyond it, near 2, far 6")
    with caplog.at_level(logging.WARNING, logger="bn_nerf.nerf.model_components.health"):
        for training_psnr, flat_colour_psnr in steps + steps:  # past the check too: it warns once
            health.record(training_psnr, flat_colour_psnr, empty)
    assert health.warned is warned
    assert len(caplog.records) == (1 if warned else 0)
    if warned:
        message = caplog.records[0].getMessage()
        assert symptom in message and "near 2, far 6" in message and "\n" not in message


# A capture small enough for the suite: 32x32 views, and bn-diner-cpu's scene handling at a quarter of
# its table and half its grid, 256 rays a step.
CAPTURE_SIZE = 32
SMALL_PRESET = dict(table_resolution=48, occupancy_resolution=32)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return write_capture(tmp_path_factory.mktemp("capture") / "nerfstudio", "nerfstudio", size=CAPTURE_SIZE, views=16)


def small_bn_diner(parser=None, **model_options):
    config = method_config("bn-diner-cpu")
    config.pipeline.datamanager.train_num_rays_per_batch = 256
    config.pipeline.max_num_rays_per_batch = 256
    for name, value in {**SMALL_PRESET, **model_options}.items():
        setattr(config.pipeline.model, name, value)
    if parser is not None:
        config.pipeline.datamanager.dataparser = parser
    return config


@pytest.fixture(scope="module")
def trained_capture(capture, tmp_path_factory):
    """bn-diner-cpu (shrunk) after 60 steps on the capture folder alone, saved as ns-train saves a run,
    its checkpoint re-estimating BN's statistics."""
    trainer = setup_trainer(small_bn_diner(), capture, tmp_path_factory.mktemp("capture-runs"), "cpu")
    trainer.config.save_config()
    train(trainer, steps=60)
    trainer.save_checkpoint(60)
    return trainer


def test_bn_diner_cpu_learns_a_capture_with_its_background_from_the_folder_alone(trained_capture):
    model = trained_capture.pipeline.model
    extent = trained_capture.pipeline.datamanager.train_dataparser_outputs.metadata["scene_extent"]
    assert "the space beyond the box is contracted" in extent.summary
    assert model.contraction is not None and (model.near_plane, model.far_plane) == (extent.near, extent.far)
    # Read as the Blender box it is not (nerfstudio's parser named by hand, below), the same capture
    # renders only its background colour: about 9 dB.
    assert eval_split_metrics(trained_capture)["psnr"] > 17


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render refuses to start without ffmpeg")
def test_ns_eval_and_ns_render_show_the_capture_from_its_run_folder(trained_capture, tmp_path):
    """The run folder alone, through the two commands' own entry points: ns-eval scores the eval split
    as training left it, and ns-render's path through the training cameras (this capture has one eval
    view, and a path needs two) starts at the first one, undistorted as nerfstudio's path cameras are,
    with what the trained model renders there -- contracted background and all -- closer to the
    photo than the photo's mean colour."""
    config_path = trained_capture.base_dir / "config.yml"
    metrics_path = tmp_path / "eval.json"
    tyro.cli(ns_eval.ComputePSNR, args=["--load-config", str(config_path), "--output-path", str(metrics_path)]).main()
    assert json.loads(metrics_path.read_text())["results"]["psnr"] > 17

    frames = tmp_path / "frames"
    tyro.cli(ns_render.Commands, args=["interpolate", "--load-config", str(config_path), "--output-path", str(frames),
                                       "--output-format", "images", "--pose-source", "train",
                                       "--interpolation-steps", "1"]).main()
    shown = np.asarray(Image.open(sorted(frames.glob("*.jpg"))[0]).convert("RGB"), dtype=np.float32) / 255
    cameras = trained_capture.pipeline.datamanager.train_dataset.cameras
    # The first path camera as nerfstudio builds it: the intrinsics, no distortion, and an image twice
    # the principal point in size (this capture's, like real ones', is off-centre).
    path_start = Cameras(camera_to_worlds=cameras.camera_to_worlds[:1], fx=cameras.fx[:1], fy=cameras.fy[:1],
                         cx=cameras.cx[:1], cy=cameras.cy[:1], camera_type=CameraType.PERSPECTIVE)
    model = trained_capture.pipeline.model
    model.eval()
    with torch.no_grad():
        expected = model.get_outputs_for_camera_ray_bundle(path_start.generate_rays(camera_indices=0))["rgb"]
    assert float(psnr(torch.from_numpy(shown), expected)) > 35

    photo = trained_capture.pipeline.datamanager.train_dataset[0]["image"][..., :3]
    rows, columns = min(shown.shape[0], photo.shape[0]), min(shown.shape[1], photo.shape[1])
    shown, photo = torch.from_numpy(shown[:rows, :columns]), photo[:rows, :columns]
    assert psnr(shown, photo) > psnr(photo.reshape(-1, 3).mean(0).expand_as(photo), photo)


def test_a_capture_read_as_a_bounded_scene_warns_once_with_the_likely_cause(capture, tmp_path, caplog):
    # A coarser grid: every step here refills it, and its refreshes are most of the run's time.
    trainer = setup_trainer(small_bn_diner(NerfstudioDataParserConfig(), occupancy_resolution=16), capture, tmp_path, "cpu")
    assert trainer.pipeline.model.contraction is None  # no extent from nerfstudio's parser: a bounded box
    with caplog.at_level(logging.WARNING, logger="bn_nerf.nerf.model_components.health"):
        train(trainer, steps=CHECK_AT_STEP)
    [warning] = [record.getMessage() for record in caplog.records if record.name == "bn_nerf.nerf.model_components.health"]
    assert "outside the region the model covers" in warning and "near 2, far 6" in warning
    assert eval_split_metrics(trainer)["psnr"] < 12
