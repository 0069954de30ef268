"""The nerfstudio plugin: bn-nerf and bn-diner. Its sub-packages follow the data, as nerfstudio's do:
data/ (a scene read from its folder) -> model_components/ (rays into samples) -> fields/ -> models/
-> engine/ (pipelines, trainer), with distributed/ beneath the samplers, models and engine, which
all use it; method_configs.py (the registered methods) and demo.py (`bn-nerf-demo`) on top. Each
imports only those before it (tests/test_layout.py)."""

import importlib
import importlib.abc
import importlib.util
import sys

from bn_nerf.upstream_warnings import silence_known_upstream_warnings

# nerfstudio imports this package to load the plugin's methods (ns-train, ns-eval, ns-render,
# ns-viewer), so this is the one hook into their processes: from here on nerfstudio's known
# deprecation warnings stay off the console (bn_nerf/upstream_warnings.py lists them).
silence_known_upstream_warnings()

# A run folder's config.yml names our classes by module path (`!!python/object:bn_nerf.nerf.trainer.
# BatchNormTrainerConfig`), and ns-eval, ns-render, ns-viewer and `ns-train --load-config` import
# those paths to load it. These are the modules a config.yml names that moved into sub-packages in
# issue 32: their old paths still import them, so runs trained before keep loading (and a run
# resumed from one writes the new paths). models.py, whose path is now a package, is answered for
# in models/__init__.py.
MOVED_MODULES = {
    "bn_nerf.nerf.dataparser": "bn_nerf.nerf.data.dataparser",
    "bn_nerf.nerf.diner": "bn_nerf.nerf.models.diner_model",
    "bn_nerf.nerf.optimizers": "bn_nerf.nerf.engine.optimizers",
    "bn_nerf.nerf.pipelines": "bn_nerf.nerf.engine.pipelines",
    "bn_nerf.nerf.schedulers": "bn_nerf.nerf.engine.schedulers",
    "bn_nerf.nerf.trainer": "bn_nerf.nerf.engine.trainer",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module under its old path and loads it as the moved module itself: one module
    object under both names, imported only when the old name is asked for."""

    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        # The import system hands out whatever sys.modules holds under the name after this returns.
        sys.modules[module.__name__] = importlib.import_module(MOVED_MODULES[module.__name__])


# Last, so that it answers only for names no file provides.
sys.meta_path.append(_MovedModules())
