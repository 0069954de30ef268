"""The one training loop every sidecar task runs: build the method's network, optimise it with
Adam, checkpoint and resume, re-estimate BatchNorm statistics, evaluate in eval mode, write outputs.

The training protocol is the same for every method (REPRODUCTION.md, "Table 1"): the learning rate
is the paper's initial one throughout, or decays exponentially to the paper's minimum where the
paper states one (occupancy: 5e-3 -> 5e-4); a decay to a tenth measured 1.5-6 dB worse, and more
seed-dependent, at CPU budgets. The run keeps the iterate with the lowest training objective (the
loss it minimizes, never the ground truth) when each step's loss is that whole objective; with
sampled mini-batches, where a step's loss is only an estimate, it keeps the last iterate.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from bn_nerf.io.errors import InputError
from bn_nerf.networks import build_network, method_config, reestimate_batchnorm
from bn_nerf.networks import stored_value_count
from bn_nerf.runtime import ThreadChoice
from bn_nerf.tasks.base import Task

METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
NETWORK_FILE = "network.pt"


@dataclass(frozen=True)
class RunSpec:
    """Which network: a method preset, its size and any NetworkConfig overrides."""

    method: str
    depth: int
    width: int
    overrides: dict = field(default_factory=dict)


KEEP_CHOICES = ("best", "last")


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    learning_rate: float
    # Exponential decay from learning_rate to this at the last iteration; None keeps it constant.
    final_learning_rate: float | None = None
    # Which iterate the run evaluates and saves: "best" (lowest training objective, when each
    # step's loss is the whole objective; otherwise the last) or "last".
    keep: str = "best"
    seed: int = 0
    # Iterations between checkpoints; 0 writes only the final one.
    checkpoint_every: int = 1000
    progress_every: int = 25
    # Iterations after which to also evaluate the iterate a run of that length would keep, as the
    # final evaluation does (eval mode, BN re-estimated): a quality-against-iterations curve from one
    # run, in metrics.json's "curve", instead of one run per point.
    evaluate_at: tuple[int, ...] = ()
    device: str = "auto"
    show_progress: bool = True

    @property
    def end_learning_rate(self) -> float:
        return self.learning_rate if self.final_learning_rate is None else self.final_learning_rate


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def validate_run(spec: RunSpec, train: TrainConfig) -> None:
    """Reject impossible settings up front, as one-line errors."""
    if train.iterations <= 0:
        raise InputError(f"iterations must be > 0, got {train.iterations}")
    if spec.depth <= 0 or spec.width <= 0:
        raise InputError(f"depth and width must be > 0, got {spec.depth} x {spec.width}")
    if not train.learning_rate > 0:
        raise InputError(f"learning rate must be > 0, got {train.learning_rate}")
    if not train.end_learning_rate > 0:
        raise InputError(f"final learning rate must be > 0, got {train.end_learning_rate}")
    if any(not 0 < point <= train.iterations for point in train.evaluate_at):
        raise InputError(f"evaluation points must lie in 1..{train.iterations}, got {list(train.evaluate_at)}")
    if train.keep not in KEEP_CHOICES:
        raise InputError(f"unknown iterate to keep '{train.keep}'; choose from {', '.join(KEEP_CHOICES)}")
    try:
        method_config(spec.method, **spec.overrides)
    except ValueError as error:
        raise InputError(str(error)) from None


def _write_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".partial")
    write(temporary)
    os.replace(temporary, path)


def _checkpoint_identity(spec: RunSpec, train: TrainConfig) -> dict:
    """What a checkpoint must agree on to be resumed into this run."""
    return {"spec": dataclasses.asdict(spec), "seed": train.seed, "learning_rate": train.learning_rate,
            "final_learning_rate": train.end_learning_rate, "keep": train.keep, "iterations": train.iterations}


def _learning_rate_factor(train: TrainConfig):
    ratio = train.end_learning_rate / train.learning_rate
    return lambda step: ratio ** min(step / train.iterations, 1.0)


class BestIterate:
    """The parameters with the lowest training loss offered so far.

    Compared and copied on the network's device with `torch.where`, so keeping the best costs no
    read-back of the loss (no GPU synchronisation per step), only a copy of the parameters.
    """

    def __init__(self, net: nn.Module):
        device = next(net.parameters()).device
        self.parameters = [parameter.detach().clone() for parameter in net.parameters()]
        self.loss = torch.tensor(math.inf, device=device)
        self.iteration = torch.tensor(0, device=device)

    @torch.no_grad()
    def offer(self, net: nn.Module, loss: torch.Tensor, iteration: int) -> None:
        """`loss` is the training loss of `net`'s current parameters, reached after `iteration` steps."""
        better = loss.detach() < self.loss  # a NaN loss is never better
        self.loss = torch.where(better, loss.detach(), self.loss)
        self.iteration = torch.where(better, torch.tensor(iteration, device=self.iteration.device), self.iteration)
        for kept, current in zip(self.parameters, net.parameters()):
            kept.copy_(torch.where(better, current.detach(), kept))

    @torch.no_grad()
    def restore(self, net: nn.Module) -> None:
        for kept, current in zip(self.parameters, net.parameters()):
            current.copy_(kept)

    def state_dict(self) -> dict:
        return {"parameters": self.parameters, "loss": self.loss, "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.parameters, self.loss, self.iteration = state["parameters"], state["loss"], state["iteration"]


def training_step(task: Task, net: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                  best: BestIterate | None, step: int) -> torch.Tensor:
    """One Adam step on the task's loss, the iterate before it offered to `best` with its loss;
    returns the loss (still on the device: reading it back every step would sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss = task.training_loss(net, generator)
    loss.backward()
    if best is not None:
        best.offer(net, loss, step)
    optimizer.step()
    return loss


def _evaluate(task: Task, net: nn.Module) -> tuple[float, torch.Tensor, dict]:
    """(train-mode primary metric, eval-mode reconstruction, eval-mode metrics) of `net`'s current
    weights; leaves `net` in eval mode with its BatchNorm statistics re-estimated."""
    with torch.no_grad():
        # The figure the authors' code reports: BN normalizing with the batch's own statistics.
        net.train()
        train_mode = task.metrics(task.reconstruct(net))[task.primary_metric]
        # Then the deployable network: running statistics re-estimated with the final weights.
        reestimate_batchnorm(net, lambda: task.calibrate(net))
        net.eval()
        reconstruction = task.reconstruct(net)
        return train_mode, reconstruction, task.metrics(reconstruction)


def _curve_point(task: Task, net: nn.Module, best: BestIterate | None, done: int, seconds: float) -> dict:
    """The evaluation a run stopped after `done` iterations would report, from copies: training
    goes on with `net` and `best` untouched (and, without a random batch drawn, the same RNG)."""
    probe = copy.deepcopy(net)
    kept_iteration = done
    if best is not None:
        candidate = copy.deepcopy(best)
        with torch.no_grad():
            candidate.offer(probe, task.training_loss(probe, None), done)
        candidate.restore(probe)
        kept_iteration = int(candidate.iteration)
    train_mode, _, quality = _evaluate(task, probe)
    return {"iteration": done, "kept_iteration": kept_iteration, "seconds": round(seconds, 3),
            **quality, f"{task.primary_metric}_train_mode": train_mode}


def fit(task: Task, spec: RunSpec, train: TrainConfig, out_dir: Path, resume: bool = False,
        threads: ThreadChoice | None = None,
        on_curve_point: Callable[[dict], None] | None = None) -> tuple[dict, nn.Module]:
    """Train `spec`'s network on `task` and write the run's outputs into `out_dir`. `threads`, how the
    process's thread count was chosen, goes into metrics.json; without it, the count alone.
    Each point of `train.evaluate_at` is also passed to `on_curve_point` as it is measured (a
    resumed run measures again the points after its checkpoint).

    `metrics.json` is written last, atomically, so a folder holding one is a finished run; any
    older one is removed first. Returns (metrics, network in eval mode).
    """
    validate_run(spec, train)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    device = resolve_device(train.device)
    task.to(device)

    torch.manual_seed(train.seed)
    net = build_network(spec.method, task.in_dim, task.out_dim, spec.depth, spec.width, **spec.overrides).to(device)
    generator = torch.Generator().manual_seed(train.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=train.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _learning_rate_factor(train))
    # The best iterate is chosen only where a step's loss is the whole training objective.
    best = BestIterate(net) if train.keep == "best" and task.full_batch else None
    identity = _checkpoint_identity(spec, train)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    start, elapsed = 0, 0.0
    curve: list[dict] = []
    evaluate_at = set(train.evaluate_at)
    if resume:
        if not checkpoint_path.is_file():
            raise InputError(f"--resume: no checkpoint at {checkpoint_path}")
        state = torch.load(checkpoint_path, map_location=device)
        if state["identity"] != identity:
            raise InputError(f"--resume: {checkpoint_path} belongs to a different run ({state['identity']})")
        net.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["generator"])
        if best is not None:
            best.load_state_dict(state["best"])
        start, elapsed = state["step"], state["seconds"]
        curve = state.get("curve", [])  # checkpoints written before curves existed have none

    def save_checkpoint(step: int) -> None:
        state = {"identity": identity, "step": step, "seconds": elapsed, "network": net.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "generator": generator.get_state(), "curve": curve,
                 **({"best": best.state_dict()} if best is not None else {})}
        _write_atomically(checkpoint_path, lambda path: torch.save(state, path))

    net.train()
    progress = Progress(TextColumn(f"{task.name} {spec.method} {spec.depth}x{spec.width}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                        disable=not train.show_progress)
    with progress:
        bar = progress.add_task("fit", total=train.iterations, completed=start, status="")
        started = time.perf_counter()
        for step in range(start, train.iterations):
            loss = training_step(task, net, optimizer, generator, best, step)
            scheduler.step()
            done = step + 1
            if done % train.progress_every == 0 or done == train.iterations:
                value = loss.item()
                if not math.isfinite(value):
                    raise RuntimeError(f"training diverged at iteration {done} (loss {value}); try a lower learning rate")
                figures = {"loss": value, **task.progress(value)}
                progress.update(bar, completed=done, status="  ".join(f"{k} {v:.4g}" for k, v in figures.items()))
            if done in evaluate_at:
                # Training seconds only: the evaluation is not part of a run of `done` iterations.
                elapsed += time.perf_counter() - started
                curve.append(_curve_point(task, net, best, done, elapsed))
                if on_curve_point is not None:
                    on_curve_point(curve[-1])
                started = time.perf_counter()
            if train.checkpoint_every and done % train.checkpoint_every == 0 and done < train.iterations:
                elapsed += time.perf_counter() - started
                started = time.perf_counter()
                save_checkpoint(done)
        elapsed += time.perf_counter() - started
    save_checkpoint(train.iterations)

    kept = {"kept": "last", "kept_iteration": train.iterations}
    if best is not None:
        with torch.no_grad():
            # The last update's result is a candidate too; the loop only saw the iterates before it.
            best.offer(net, task.training_loss(net, generator), train.iterations)
        best.restore(net)
        kept = {"kept": "best", "kept_iteration": int(best.iteration), "kept_training_loss": float(best.loss)}

    train_mode, reconstruction, quality = _evaluate(task, net)

    metrics = {
        "task": task.name, "method": spec.method, "depth": spec.depth, "width": spec.width,
        **{key: value for key, value in spec.overrides.items() if isinstance(value, (int, float, str))},
        "seed": train.seed, "iterations": train.iterations, "learning_rate": train.learning_rate,
        "final_learning_rate": train.end_learning_rate, **kept,
        # The checkpoint's iteration a resumed run continued from (0: trained from scratch), so that
        # a user -- and a test -- can tell a resumed run from one that silently started over.
        "resumed_from_iteration": start,
        "seconds": round(elapsed, 3), "params": stored_value_count(net), "device": device.type,
        # Speed depends on the count: a slow run is explained by it (and by the probe's trials).
        **(threads.metrics() if threads is not None else {"threads": torch.get_num_threads()}),
        **quality, f"{task.primary_metric}_train_mode": train_mode,
        **({"curve": curve} if train.evaluate_at else {}),
    }
    metrics.update(task.extra_metrics(net))
    task.write_outputs(reconstruction, out_dir)
    network_state = {"spec": dataclasses.asdict(spec), "network": net.state_dict()}
    _write_atomically(out_dir / NETWORK_FILE, lambda path: torch.save(network_state, path))
    _write_atomically(out_dir / METRICS_FILE, lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n"))
    return metrics, net
