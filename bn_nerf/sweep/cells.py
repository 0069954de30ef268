"""From a configuration to cells, and one cell's run.

A cell is one ordinary run of a task command -- `bn-inr <task> --method M --depth D --width W
--seed S --iterations N <options> --out <cell folder>` -- parsed by that command's own parser
and run by its own `run`, so its folder is exactly what the command writes (metrics.json last).
Folder layout: `<out>/<task>/<input>/<method>_<depth>x<width>/seed<seed>/`, and beside the
command's files:

- `cell.json`  the cell's settings, written when it first starts; a later sweep into the same
               folder with other settings is refused rather than mixing two budgets in one table;
- `attempts.jsonl`  one line per start (process, host, whether it resumed a checkpoint);
- `error.txt`  why the last attempt failed; removed when an attempt starts.

Everything is checked before any cell starts: the configuration (methods, sizes, options through
the command's parser), every input file (read once), every NeRF result file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bn_nerf.io.errors import InputError
from bn_nerf.sweep.config import EMBEDDED, SweepConfig
from bn_nerf.sweep.nerf_results import read_ns_eval
from bn_nerf.sweep.tasks import SWEEP_TASKS
from bn_nerf.tasks.arguments import resolve_run
from bn_nerf.tasks.trainer import CHECKPOINT_FILE, METRICS_FILE, validate_run

CELL_FILE = "cell.json"
ATTEMPTS_FILE = "attempts.jsonl"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class Cell:
    task: str
    input_name: str
    # The input file; None for the command's embedded input.
    input_path: Path | None
    method: str
    depth: int
    width: int
    seed: int
    iterations: int
    options: tuple[tuple[str, object], ...]
    checkpoint_every: int
    folder: Path

    @property
    def name(self) -> str:
        return f"{self.task}/{self.input_name}/{self.method}_{self.depth}x{self.width}/seed{self.seed}"

    def settings(self) -> dict:
        """What makes two runs of this cell the same run."""
        return {"task": self.task, "input": self.input_name, "method": self.method, "depth": self.depth,
                "width": self.width, "seed": self.seed, "iterations": self.iterations,
                "options": {name: list(value) if isinstance(value, tuple) else value for name, value in self.options}}

    def arguments(self, threads: int, resume: bool, device: str = "auto") -> list[str]:
        """The task command's arguments (after `bn-inr <task>`) that run this cell on `device`."""
        arguments = ["--method", self.method, "--depth", str(self.depth), "--width", str(self.width),
                     "--seed", str(self.seed), "--iterations", str(self.iterations),
                     "--checkpoint-every", str(self.checkpoint_every), "--threads", str(threads),
                     "--device", device, "--quiet", "--out", str(self.folder)]
        if self.input_path is not None:
            arguments += [SWEEP_TASKS[self.task].input_flag, str(self.input_path)]
        for name, value in self.options:
            flag = "--" + name.replace("_", "-")
            if value is True:
                arguments.append(flag)
            elif value is not False:
                arguments += [flag, *map(str, value if isinstance(value, tuple) else (value,))]
        return arguments + (["--resume"] if resume else [])

    @property
    def finished(self) -> bool:
        return (self.folder / METRICS_FILE).is_file()

    def metrics(self) -> dict | None:
        """The finished run's metrics.json; None before it finishes."""
        path = self.folder / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def failed(self) -> bool:
        return (self.folder / ERROR_FILE).is_file() and not self.finished


def plan_cells(config: SweepConfig, out: Path) -> list[Cell]:
    """Every cell of the configuration, in its order, with every input and option checked."""
    out = Path(out).absolute()
    for column, files in config.nerf:
        for path in files:
            read_ns_eval(path)
    cells = []
    for grid in config.grids:
        for input_name, input_path in _inputs(grid.task, grid.inputs, config.path):
            for method in grid.methods:
                for depth, width in grid.sizes:
                    for seed in grid.seeds:
                        cells.append(Cell(grid.task, input_name, input_path, method, depth, width, seed,
                                          grid.iterations, grid.options, config.checkpoint_every,
                                          out / grid.task / input_name / f"{method}_{depth}x{width}" / f"seed{seed}"))
    for cell in cells:
        # The command's own parser and checks judge every cell's options before any cell starts.
        task = SWEEP_TASKS[cell.task]
        try:
            arguments = task.parser().parse_args(cell.arguments(threads=1, resume=False))
            task.module.check_arguments(arguments)
            validate_run(*resolve_run(arguments, task.module.PAPER_DEFAULTS))
        except InputError as error:
            raise InputError(f"{config.path}: tasks.{cell.task}: {error}") from None
    for cell in cells:
        recorded = _recorded_settings(cell)
        if recorded is not None and recorded != cell.settings():
            changed = sorted(key for key in cell.settings() if recorded.get(key) != cell.settings()[key])
            raise InputError(f"{cell.folder}: holds a run with other settings ({', '.join(changed)}); "
                             f"use another --out or remove the folder")
    return cells


def _inputs(task: str, entries: tuple[str, ...], config_path: Path) -> list[tuple[str, Path | None]]:
    """(name, file) of every input: the embedded one, files, and every suitable file in folders."""
    kind = SWEEP_TASKS[task]
    inputs: list[tuple[str, Path | None]] = []
    for entry in entries:
        if entry == EMBEDDED:
            inputs.append((EMBEDDED, None))
            continue
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(kind.input_suffixes))
            if not files:
                raise InputError(f"{path}: folder holds no {task} input ({', '.join(kind.input_suffixes)})")
        elif path.exists():
            files = [path]
        else:
            raise InputError(f"{path}: no such file or folder (tasks.{task}.inputs in {config_path}){_how_to_fetch(path)}")
        for file in files:
            kind.load_input(file)
            inputs.append((file.name.split(".")[0], file.absolute()))
    names = [name for name, _ in inputs]
    repeated = [name for index, name in enumerate(names) if name in names[:index]]
    if repeated:
        raise InputError(f"{config_path}: tasks.{task}.inputs: two inputs are named '{repeated[0]}'")
    return inputs


def _how_to_fetch(missing: Path) -> str:
    """What to run first for a missing input the repository leaves out on purpose (Kodak, which
    configs/table1/gpu-window.yaml and paper.yaml read), or nothing."""
    folder = missing if missing.name.lower() == "kodak" else missing.parent
    if folder.name.lower() != "kodak":
        return ""
    photo = re.fullmatch(r"kodim(\d\d)\.png", missing.name)
    only_it = f" --photos {int(photo[1])}" if photo else ""
    return f"; fetch Kodak first with `python scripts/fetch_kodak.py {folder}{only_it}` (needs the internet)"


def _recorded_settings(cell: Cell) -> dict | None:
    path = cell.folder / CELL_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError(f"{path}: unreadable cell record; remove the cell's folder to run it again") from None


def execute(cell: Cell, threads: int, device: str = "auto") -> dict:
    """Run one cell in this process on `device` (auto: CUDA when present): skip it when finished,
    resume it from its checkpoint when interrupted, start it otherwise. A failure is recorded in the
    cell's error.txt and returned, never raised, so that one cell's fault stops no other."""
    if cell.finished:
        return {"cell": cell.name, "status": "finished", "ran": False}
    cell.folder.mkdir(parents=True, exist_ok=True)
    (cell.folder / ERROR_FILE).unlink(missing_ok=True)
    record = cell.folder / CELL_FILE
    if not record.is_file():
        record.write_text(json.dumps(cell.settings(), indent=2) + "\n")
    resume = (cell.folder / CHECKPOINT_FILE).is_file()
    with (cell.folder / ATTEMPTS_FILE).open("a") as attempts:
        attempts.write(json.dumps({"started": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
                                   "threads": threads, "device": device, "resumed": resume}) + "\n")
    task = SWEEP_TASKS[cell.task]
    try:
        task.module.run(task.parser().parse_args(cell.arguments(threads, resume, device)))
    except Exception as error:  # any fault of this cell is its own, recorded where the user looks
        message = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, InputError):
            message = f"{type(error).__name__}: {message}"
        (cell.folder / ERROR_FILE).write_text(message + "\n\n" + traceback.format_exc())
        return {"cell": cell.name, "status": "failed", "error": message}
    return {"cell": cell.name, "status": "finished", "ran": True}


def record_failure(cell: Cell, message: str) -> None:
    """Record a failure seen from outside the cell (e.g. its worker lost more often than retried)."""
    cell.folder.mkdir(parents=True, exist_ok=True)
    (cell.folder / ERROR_FILE).write_text(message + "\n")
