"""Runs trained before the plugin's modules moved into sub-packages (issue 32) still load.

A run folder's config.yml names our classes by module path, and ns-eval, ns-render and ns-viewer
import those paths to load it. tests/data/runs_before_layout/<method>/config.yml are the files
`ns-train bn-diner-cpu` and `ns-train bn-nerf-cpu` wrote before the move (at 8215278), run from a
folder holding the scene as `scene/` (their paths are relative: data `scene`, output `runs`), on the
tiny scene and model sizes below, for 2 steps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import tyro
import yaml

from nerfstudio.scripts import eval as ns_eval

from bn_nerf.nerf.data.dataparser import SceneDataParser, SceneDataParserConfig
from bn_nerf.nerf.data.scene import write_scene
from bn_nerf.nerf.engine.optimizers import FusedAdamOptimizerConfig
from bn_nerf.nerf.engine.pipelines import SampleBudgetPipeline, SampleBudgetPipelineConfig
from bn_nerf.nerf.engine.schedulers import FloatExponentialDecayScheduler, FloatExponentialDecaySchedulerConfig
from bn_nerf.nerf.engine.trainer import BatchNormTrainer, BatchNormTrainerConfig
from bn_nerf.nerf.models.diner_model import BNDINERModel, BNDINERModelConfig
from bn_nerf.nerf.models.nerf_model import BNNeRFModelConfig, bn_nerf_model

RUNS_BEFORE_LAYOUT = Path(__file__).parent / "data" / "runs_before_layout"
MODELS = {"bn-diner-cpu": (BNDINERModelConfig, BNDINERModel), "bn-nerf-cpu": (BNNeRFModelConfig, bn_nerf_model)}


def names_in(config_text: str) -> set[str]:
    """The bn_nerf classes and functions a config.yml names."""
    return set(re.findall(r"!!python/(?:object|name):(bn_nerf\.[\w.]+)", config_text))


@pytest.mark.parametrize("method", sorted(MODELS))
def test_a_config_written_before_the_move_loads_into_todays_classes(method):
    text = (RUNS_BEFORE_LAYOUT / method / "config.yml").read_text()
    assert "bn_nerf.nerf.trainer.BatchNormTrainerConfig" in names_in(text)  # the old paths, as written then

    config = yaml.load(text, Loader=yaml.Loader)  # as nerfstudio's eval_setup reads it
    assert type(config) is BatchNormTrainerConfig and config._target is BatchNormTrainer
    assert type(config.pipeline) is SampleBudgetPipelineConfig and config.pipeline._target is SampleBudgetPipeline
    assert type(config.pipeline.datamanager.dataparser) is SceneDataParserConfig
    assert config.pipeline.datamanager.dataparser._target is SceneDataParser
    model_config, model_target = MODELS[method]
    assert type(config.pipeline.model) is model_config and config.pipeline.model._target is model_target
    for optimizer in config.optimizers.values():
        assert type(optimizer["optimizer"]) is FusedAdamOptimizerConfig
        assert type(optimizer["scheduler"]) is FloatExponentialDecaySchedulerConfig
        assert optimizer["scheduler"]._target is FloatExponentialDecayScheduler

    # Saved again (a run resumed from it), it names today's modules, and reads back the same.
    saved = yaml.dump(config)
    assert len(names_in(saved)) == len(names_in(text)) and not names_in(saved) & names_in(text)
    assert yaml.load(saved, Loader=yaml.Loader) == config


@pytest.mark.parametrize("method", sorted(MODELS))
def test_ns_eval_loads_a_run_folder_whose_config_names_the_old_module_paths(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_scene(Path("scene"), size=16, views={"train": 6, "val": 1, "test": 2}, seed=1)
    old_config = (RUNS_BEFORE_LAYOUT / method / "config.yml").read_text()
    # The run's checkpoint, written by today's code from the same configuration (the move changed no
    # parameter's name), beside the config.yml written before the move.
    config = yaml.load(old_config, Loader=yaml.Loader)
    config.threads = torch.get_num_threads()  # the test's thread count, not a fresh probe
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.save_checkpoint(0)
    config_path = trainer.base_dir / "config.yml"
    config_path.write_text(old_config)

    tyro.cli(ns_eval.ComputePSNR, args=["--load-config", str(config_path), "--output-path", "eval.json"]).main()
    evaluation = json.loads(Path("eval.json").read_text())
    assert evaluation["method_name"] == method and evaluation["checkpoint"].endswith("step-000000000.ckpt")
    assert 0.0 < evaluation["results"]["psnr"] < 60.0
