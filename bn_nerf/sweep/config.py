"""A sweep's configuration file: tasks x inputs x methods x net sizes x seeds, with budgets.

YAML (JSON is valid YAML). Every key but `tasks` is optional; a task's grid falls back to the
sweep-wide `methods` and `seeds`, then to the paper (its seven methods, the task's net sizes and
iterations), then to seed 0 and the task's embedded input:

    title: Table 1 at CPU budgets
    methods: [siren, relu, bn, mfn, wire, pe, bn+pe]
    seeds: [0]
    checkpoint_every: 100            # iterations between a cell's checkpoints
    tasks:
      image:
        inputs: [data/kodak]         # files or folders (one cell per file); "embedded": the built-in input
        sizes: [5x20, 10x28]
        iterations: 1000
        options: {downscale: 4}      # any option of `bn-inr image`, by its long name
    nerf:                            # the NeRF row, from `ns-eval` outputs (no training in the sweep)
      NeRF: [outputs/lego/nerf/eval.json]
      BN+NeRF: [outputs/lego/bn-nerf/eval.json]

Relative paths are read from the current directory. Nothing here touches an input file; the plan
(`bn_nerf.sweep.cells`) checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bn_nerf.io.errors import InputError
from bn_nerf.networks import PRESETS
from bn_nerf.networks.presets import PAPER_METHODS
from bn_nerf.sweep.paper import NERF_COLUMNS
from bn_nerf.sweep.tasks import SWEEP_TASKS
from bn_nerf.tasks.runs import parse_size

EMBEDDED = "embedded"
# A smoke run's iterations: enough to pass every step of a run (train, keep the best iterate,
# re-estimate BN, evaluate, write) without training anything worth reading.
SMOKE_ITERATIONS = 5
DEFAULT_CHECKPOINT_EVERY = 100
SWEEP_KEYS = ("title", "methods", "seeds", "checkpoint_every", "tasks", "nerf")
GRID_KEYS = ("inputs", "methods", "seeds", "sizes", "iterations", "options")
# Options every cell's command gets from the grid or the sweep itself; a config cannot set them.
RESERVED_OPTIONS = ("method", "methods", "depth", "width", "sizes", "seed", "iterations", "out", "resume",
                    "quiet", "threads", "device", "checkpoint_every", "config")


@dataclass(frozen=True)
class TaskGrid:
    task: str
    inputs: tuple[str, ...]
    methods: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    seeds: tuple[int, ...]
    iterations: int
    # (option, value) pairs of the task's command, option names with underscores.
    options: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class SweepConfig:
    path: Path
    title: str
    checkpoint_every: int
    grids: tuple[TaskGrid, ...]
    # Paper NeRF column -> the `ns-eval` JSON files (one per scene) averaged into it.
    nerf: tuple[tuple[str, tuple[Path, ...]], ...]


def load_config(path: Path) -> SweepConfig:
    """Read and check a sweep configuration; every problem is a one-line InputError naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    where = _Where(path)
    raw = where.mapping(raw, "the file", SWEEP_KEYS)
    methods = where.methods(raw.get("methods", list(PAPER_METHODS)), "methods")
    seeds = where.seeds(raw.get("seeds", [0]), "seeds")
    checkpoint_every = where.positive_int(raw.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY), "checkpoint_every")
    tasks = where.mapping(raw.get("tasks", {}), "tasks", SWEEP_TASKS, kind="task")
    grids = tuple(where.grid(name, grid, methods, seeds) for name, grid in tasks.items())
    nerf = where.mapping(raw.get("nerf", {}), "nerf", NERF_COLUMNS, kind="NeRF column")
    nerf_files = tuple((column, tuple(Path(p) for p in where.strings(files, f"nerf.{column}")))
                       for column, files in nerf.items())
    if not grids and not nerf_files:
        raise InputError(f"{path}: names no task and no NeRF results; nothing to sweep")
    return SweepConfig(path, str(raw.get("title", path.stem)), checkpoint_every, grids, nerf_files)


class _Where:
    """Checks of one config file's values, each failing with the file and the key in its message."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str):
        raise InputError(f"{self.path}: {key}: {problem}")

    def mapping(self, value, key: str, known=None, kind: str = "key") -> dict:
        """`value` as a dict whose keys are all in `known` (any key when None)."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        unknown = [str(name) for name in value if known is not None and name not in known]
        if unknown:
            self.fail(key, f"unknown {kind} '{unknown[0]}'; choose from {', '.join(known)}")
        return value

    def strings(self, value, key: str) -> list[str]:
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(item, (str, int, float)) and str(item) for item in values):
            self.fail(key, "expected a non-empty list of names")
        return [str(item) for item in values]

    def methods(self, value, key: str) -> tuple[str, ...]:
        methods = self.strings(value, key)
        for method in methods:
            if method not in PRESETS:
                self.fail(key, f"unknown method '{method}'; choose from {', '.join(PRESETS)}")
        return self.unique(methods, key)

    def seeds(self, value, key: str) -> tuple[int, ...]:
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 for seed in values):
            self.fail(key, f"expected a list of seeds (integers >= 0), got {value!r}")
        return self.unique(values, key)

    def positive_int(self, value, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.fail(key, f"expected an integer > 0, got {value!r}")
        return value

    def unique(self, values: list, key: str) -> tuple:
        repeated = [value for index, value in enumerate(values) if value in values[:index]]
        if repeated:
            self.fail(key, f"'{repeated[0]}' is listed twice")
        return tuple(values)

    def sizes(self, value, key: str) -> tuple[tuple[int, int], ...]:
        sizes = []
        for text in self.strings(value, key):
            try:
                sizes.append(parse_size(text))
            except InputError as error:
                self.fail(key, str(error))
        return self.unique(sizes, key)

    def options(self, value, key: str) -> tuple[tuple[str, object], ...]:
        options = []
        for name, setting in self.mapping(value, key).items():
            option = str(name).replace("-", "_")
            if option in RESERVED_OPTIONS:
                self.fail(f"{key}.{name}", "set by the sweep for every cell; use the grid's keys "
                                           "(methods, sizes, seeds, iterations) or the sweep's flags")
            if isinstance(setting, (dict, list)) and not (isinstance(setting, list) and setting):
                self.fail(f"{key}.{name}", f"expected a value or a non-empty list, got {setting!r}")
            options.append((option, tuple(setting) if isinstance(setting, list) else setting))
        return tuple(options)

    def grid(self, task: str, raw, methods: tuple[str, ...], seeds: tuple[int, ...]) -> TaskGrid:
        key = f"tasks.{task}"
        raw = self.mapping(raw, key, GRID_KEYS)
        defaults = SWEEP_TASKS[task].module.PAPER_DEFAULTS
        sizes = raw.get("sizes", [f"{depth}x{width}" for depth, width in defaults.sizes])
        return TaskGrid(
            task=task,
            inputs=self.unique(self.strings(raw.get("inputs", [EMBEDDED]), f"{key}.inputs"), f"{key}.inputs"),
            methods=self.methods(raw["methods"], f"{key}.methods") if "methods" in raw else methods,
            sizes=self.sizes(sizes, f"{key}.sizes"),
            seeds=self.seeds(raw["seeds"], f"{key}.seeds") if "seeds" in raw else seeds,
            iterations=self.positive_int(raw.get("iterations", defaults.iterations), f"{key}.iterations"),
            options=self.options(raw.get("options", {}), f"{key}.options"),
        )


def smoke_config(config: SweepConfig) -> SweepConfig:
    """The same grid -- tasks, inputs, methods, net sizes, seeds -- shrunk to seconds a cell: each
    task's smoke options (tiny inputs) over the configuration's, and SMOKE_ITERATIONS iterations."""
    grids = tuple(replace(grid, iterations=min(grid.iterations, SMOKE_ITERATIONS),
                          options=tuple({**dict(grid.options), **dict(SWEEP_TASKS[grid.task].smoke_options)}.items()))
                  for grid in config.grids)
    return replace(config, title=f"{config.title} (smoke: tiny inputs, {SMOKE_ITERATIONS} iterations)", grids=grids)
