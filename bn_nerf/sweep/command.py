"""`bn-inr sweep CONFIG --out DIR`: every cell of a Table 1 grid, then the table.

Cells run as Ray tasks (`--engine ray`, the default: a laptop's embedded instance or a cluster) or
in a pool of worker processes on this machine (`--engine local`: no Ray, for a lent GPU box);
`--smoke` runs the same grid shrunk to seconds (`config.smoke_config`).

A rerun into the same DIR skips finished cells, resumes interrupted ones from their checkpoints
and retries failed ones; `--table-only` writes the table from whatever DIR holds, running nothing.
Each invocation appends a start and an end record (machine, load, wall time) to DIR/sweep_log.jsonl.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shlex
import time
import uuid
from pathlib import Path

from bn_nerf.io.errors import InputError
from bn_nerf.runtime import cpu_model
from bn_nerf.sweep.cells import ERROR_FILE, Cell, plan_cells
from bn_nerf.sweep.config import load_config, smoke_config
from bn_nerf.sweep.engine import DEFAULT_RETRIES, run_cells, start_ray
from bn_nerf.sweep.local_engine import run_cells_locally, worker_devices
from bn_nerf.sweep.table import write_tables
from bn_nerf.tasks.runs import positive
from bn_nerf.tasks.trainer import CHECKPOINT_FILE

LOG_FILE = "sweep_log.jsonl"
ENGINES = ("ray", "local")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="sweep configuration, YAML or JSON (e.g. configs/table1/cpu.yaml)")
    parser.add_argument("--out", type=Path, required=True,
                        help="sweep folder: one run folder per cell, the log, and the table (on a cluster: a "
                             "folder every node sees)")
    parser.add_argument("--engine", choices=ENGINES, default="ray",
                        help="ray: cells as Ray tasks, on an embedded instance or a cluster (default); local: a "
                             "pool of worker processes on this machine, needing no Ray")
    parser.add_argument("--smoke", action="store_true",
                        help="run the same grid shrunk (tiny inputs, a few iterations) to check it end to end")
    parser.add_argument("--address", help="join a running Ray cluster: 'auto' or HOST:PORT (default: start an "
                                          "embedded local instance)")
    parser.add_argument("--cpus", type=int, help="CPUs the cells may use: of the embedded Ray instance, or of the "
                                                 "local engine's pool (default: all of this machine's)")
    parser.add_argument("--threads-per-cell", type=int, default=1,
                        help="CPUs each cell asks for and PyTorch threads it runs (default 1: a machine runs one "
                             "cell per CPU)")
    parser.add_argument("--cells-per-gpu", type=int, default=1,
                        help="cells sharing one GPU when the machine or cluster has GPUs (default 1)")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help=f"times a cell whose worker process died is rerun (default {DEFAULT_RETRIES})")
    parser.add_argument("--only", nargs="+", metavar="PATTERN",
                        help="run only cells whose name matches a pattern, e.g. 'image/*/bn+pe_10x28/*' "
                             "(names: TASK/INPUT/METHOD_DEPTHxWIDTH/seedN)")
    parser.add_argument("--table-only", action="store_true", help="write the table from DIR as it is; run nothing")
    parser.add_argument("--table-out", type=Path, help="folder for the table files (default: --out)")


def _machine() -> dict:
    import torch

    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpus": gpus, "host": platform.node()}


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _log(out: Path, record: dict) -> None:
    with (out / LOG_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _selected(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    if not patterns:
        return cells
    chosen = [cell for cell in cells if any(fnmatch.fnmatchcase(cell.name, pattern) for pattern in patterns)]
    if not chosen:
        raise InputError(f"--only {' '.join(patterns)}: matches no cell (names look like {cells[0].name})"
                         if cells else "--only: the configuration has no cells")
    return chosen


def _command_line(args: argparse.Namespace) -> str:
    """The invocation as a user would retype it (flags left at their defaults omitted)."""
    words = ["bn-inr", "sweep", str(args.config), "--out", str(args.out)]
    words += ["--smoke"] if args.smoke else []
    for flag, value, default in (("--engine", args.engine, "ray"), ("--address", args.address, None),
                                 ("--cpus", args.cpus, None),
                                 ("--threads-per-cell", args.threads_per_cell, 1),
                                 ("--cells-per-gpu", args.cells_per_gpu, 1), ("--retries", args.retries, DEFAULT_RETRIES)):
        if value != default:
            words += [flag, str(value)]
    if args.only:
        words += ["--only", *args.only]
    return shlex.join(words)


def _report_line(done: int, total: int, cell: Cell, outcome: dict) -> str:
    if outcome["status"] == "failed":
        return f"[{done}/{total}] {cell.name}: FAILED: {outcome['error']} (see {cell.folder / ERROR_FILE})"
    metrics = cell.metrics() or {}
    figures = ", ".join(f"{key} {metrics[key]:.4g}" for key in ("psnr", "iou") if key in metrics)
    return f"[{done}/{total}] {cell.name}: {figures}, {metrics.get('seconds', 0):.0f} s"


def run(args: argparse.Namespace) -> int:
    for value, flag in ((args.threads_per_cell, "--threads-per-cell"), (args.cells_per_gpu, "--cells-per-gpu")):
        positive(value, flag)
    if args.cpus is not None:
        positive(args.cpus, "--cpus")
    if args.retries < 0:
        raise InputError(f"--retries must be >= 0, got {args.retries}")
    if args.engine == "local" and args.address is not None:
        raise InputError("--address joins a Ray cluster; --engine local runs on this machine alone")
    # Checked before anything is written: a request this machine cannot grant fails in one line.
    devices = worker_devices(args.cpus, args.threads_per_cell, args.cells_per_gpu) if args.engine == "local" else []
    config = load_config(args.config)
    if args.smoke:
        config = smoke_config(config)
    cells = plan_cells(config, args.out)
    table_out = args.table_out or args.out
    if not args.table_only:
        chosen = _selected(cells, args.only)
        to_run = [cell for cell in chosen if not cell.finished]
        print(f"{len(cells)} cells in {args.config}; {len(chosen) - len(to_run)} of the {len(chosen)} chosen are "
              f"finished, {len(to_run)} to run ({sum((c.folder / CHECKPOINT_FILE).is_file() for c in to_run)} "
              f"resume a checkpoint)", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        invocation = uuid.uuid4().hex
        _log(args.out, {"event": "start", "invocation": invocation, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "command": _command_line(args),
                        "load": _load(), **_machine()})
        started = time.perf_counter()
        outcomes: list[dict] = []
        if to_run:
            def report(cell: Cell, outcome: dict) -> None:
                outcomes.append(outcome)
                print(_report_line(len(outcomes), len(to_run), cell, outcome), flush=True)

            if args.engine == "local":
                print(f"local engine: {min(len(devices), len(to_run))} worker(s) on {', '.join(sorted(set(devices)))}, "
                      f"{args.threads_per_cell} thread(s) each", flush=True)
                run_cells_locally(to_run, devices, args.threads_per_cell, args.retries, report)
            else:
                start_ray(args.address, args.cpus)
                run_cells(to_run, args.threads_per_cell, args.cells_per_gpu, args.retries, report)
        failed = [outcome for outcome in outcomes if outcome["status"] == "failed"]
        _log(args.out, {"event": "end", "invocation": invocation, "wall_seconds": round(time.perf_counter() - started, 1),
                        "cells_run": len(outcomes), "cells_failed": len(failed), "load": _load()})
    table = write_tables(config, cells, table_out, args.out / LOG_FILE)
    unfinished = sum(not cell.finished for cell in cells)
    print(f"table -> {table} ({len(cells) - unfinished} of {len(cells)} cells finished)")
    return 1 if any(cell.failed for cell in cells) and not args.table_only else 0
