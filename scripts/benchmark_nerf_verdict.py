"""BN on against BN off for the NeRF CPU presets, fairly: each arm's hyperparameters chosen by the same
search on the validation views, then several seeds per arm on the test views, at equal steps and at
equal training time.

    # 1. The search, run separately for each arm (one seed, the preset's steps, validation views):
    python scripts/benchmark_nerf_verdict.py search --pair diner --scene data/lego-100 \\
        --grid table_smoothness=0,0.1,1 fields_lr=3e-3,1e-2 --output outputs/verdict
    # 2. Seeds at each arm's chosen values, on the test views:
    python scripts/benchmark_nerf_verdict.py compare --pair diner --scene data/lego-100 --seeds 0 1 2 \\
        --minutes 1 2 --bn table_smoothness=0.1 --bn-off table_smoothness=0 --output outputs/verdict
    # 3. The tables and verdicts of everything under --output:
    python scripts/benchmark_nerf_verdict.py summary --output outputs/verdict

Real captures (issue 24): their eval split is nerfstudio's one held-out set, used for val and test
alike, so searching on it would tune on the test views. `holdout` writes a copy of a transforms.json
capture (images linked, not copied) whose val split is carved out of the training frames and whose
test split is the capture's eval split, untouched:

    python scripts/benchmark_nerf_verdict.py holdout --scene /data/fox --output /data/fox-search
    python scripts/benchmark_nerf_verdict.py search --pair diner --scene /data/fox-search --downscale-factor 4 \
        --steps 500 --check-pixels 8192 --grid fields_lr=3e-3,1e-2 table_lr=5e-3,2e-2
    python scripts/benchmark_nerf_verdict.py compare --pair diner --scene /data/fox --downscale-factor 4 \
        --steps 500 --check-pixels 8192 --minutes 2 4 --bn ... --bn-off ...

--check-pixels N measures a check on a fixed random sample of N eval pixels, the same for both arms
(scripts/benchmark_nerf.py's check), instead of the whole split: a capture's whole eval split takes
this CPU minutes a check.

Pairs: "nerf" is bn-nerf-cpu (the occupancy sampler) with BN and with `normalization none`; "diner" is
bn-diner-cpu and its BN-off twin. A hyperparameter is a model option (e.g. table_smoothness) or a
learning rate: fields_lr (the MLPs), table_lr (DINER's table); a learning rate decays a hundredfold
over the run as the presets' do.

compare: per seed, both arms start from the same initial weights (the same seed; BN's layers draw no
random numbers) and train in this one process with their steps interleaved -- the arm with the least
training time takes the next step -- each with random number streams of its own, so that the order of
interleaving changes nothing and load on the shared CPU falls on both alike. Both arms run at the same
--threads (default 1), fixed: the trainers are given that count, never a probe of their own. Checks (not counted as
training time): at each of --minutes of an arm's own training time (equal time) and at the preset's
step count (equal steps). A check is the test split in eval mode after the checkpoint-time BN
re-estimation: the figure ns-eval would report for a checkpoint saved there. Results are written
after every seed; a rerun skips the seeds already done.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import statistics
from pathlib import Path

import numpy as np
import torch
from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

from benchmark_nerf import TestPixels, machine
from bn_nerf.nerf.engine.budget import TrainingRecord, method_config, setup_trainer, test_metrics, train

PAIRS = {"nerf": "bn-nerf-cpu", "diner": "bn-diner-cpu"}
ARMS = {"BN": "batch", "BN off": "none"}
LEARNING_RATES = {"fields_lr": "fields", "table_lr": "table"}


def parse_settings(items: list[str]) -> dict[str, float]:
    settings = {}
    for item in items:
        name, value = item.split("=")
        settings[name] = float(value)
    return settings


def arm_config(pair: str, arm: str, settings: dict[str, float], steps: int | None,
               downscale_factor: int | None = None):
    """The pair's preset with the arm's normalization and these settings (and `steps` and the images_N
    read, if given)."""
    config = method_config(PAIRS[pair])
    config.pipeline.model.normalization = ARMS[arm]
    if downscale_factor is not None:
        config.pipeline.datamanager.dataparser.downscale_factor = downscale_factor
    if steps is not None:
        config.max_num_iterations = steps
        for group in config.optimizers.values():
            group["scheduler"].max_steps = steps
    for name, value in settings.items():
        if name in LEARNING_RATES:
            group = config.optimizers[LEARNING_RATES[name]]
            group["optimizer"].lr = value
            group["scheduler"].lr_final = value / 100
        elif hasattr(config.pipeline.model, name):
            setattr(config.pipeline.model, name, type(getattr(config.pipeline.model, name))(value))
        else:
            raise SystemExit(f"error: {PAIRS[pair]} has no setting '{name}'")
    return config


class Arm:
    """One trainer with random number streams of its own."""

    def __init__(self, args, arm: str, settings: dict[str, float], seed: int, eval_split: str):
        self.name, self.settings = arm, settings
        config = arm_config(args.pair, arm, settings, args.steps, args.downscale_factor)
        self.trainer = setup_trainer(config, args.scene, args.output / "runs", "cpu", seed=seed, eval_split=eval_split)
        # The same pixels for every arm and seed: the sample's generator is seeded on its own.
        self.pixels = TestPixels(self.trainer.pipeline, args.check_pixels) if args.check_pixels else None
        self.steps = self.trainer.config.max_num_iterations
        self.streams = (torch.get_rng_state(), random.getstate())
        self.record = TrainingRecord()
        self.checks: dict[str, dict] = {}

    @contextlib.contextmanager
    def own_streams(self):
        outer = (torch.get_rng_state(), random.getstate())
        torch.set_rng_state(self.streams[0])
        random.setstate(self.streams[1])
        try:
            yield
        finally:
            self.streams = (torch.get_rng_state(), random.getstate())
            torch.set_rng_state(outer[0])
            random.setstate(outer[1])

    def evaluate(self) -> dict:
        check = {"steps": self.record.steps, "seconds": round(self.record.seconds, 1)}
        with self.own_streams():
            if self.pixels is not None:
                return {**check, "psnr": self.pixels.psnr(self.trainer)["test_pixel_psnr"]}
            metrics = test_metrics(self.trainer)
        return {**check, "psnr": round(metrics["psnr"], 3), "ssim": round(metrics["ssim"], 4)}


def holdout(args) -> None:
    """A copy of a transforms.json capture whose val split is every 8th of its training frames."""
    meta = json.loads((args.scene / "transforms.json").read_text())
    names = [frame["file_path"] for frame in meta["frames"]]
    train, evaluation = get_train_eval_split_fraction(names, 0.9)  # nerfstudio-data's split, as the reader's
    validation = train[::8]
    splits = {"train": np.setdiff1d(train, validation), "val": validation, "test": evaluation}
    args.output.mkdir(parents=True, exist_ok=True)
    for entry in args.scene.iterdir():
        if entry.name != "transforms.json" and not (args.output / entry.name).exists():
            (args.output / entry.name).symlink_to(entry.resolve())
    for split, indices in splits.items():
        meta[f"{split}_filenames"] = [names[index] for index in indices]
    (args.output / "transforms.json").write_text(json.dumps(meta, indent=2))
    print(f"{args.output}: " + ", ".join(f"{len(indices)} {split}" for split, indices in splits.items()))


def search(args) -> None:
    names = [item.split("=")[0] for item in args.grid]
    values = [[float(value) for value in item.split("=")[1].split(",")] for item in args.grid]
    # One file per arm list, so that the arms can search in two processes at once.
    arms_name = "+".join(arm.replace(" ", "-") for arm in args.arms)
    results_path = args.output / f"search-{args.pair}-{args.scene.name}-{arms_name}.json"
    results = (json.loads(results_path.read_text()) if results_path.is_file()
               else {"pair": args.pair, "scene": args.scene.name, "runs": []})
    done = {(run["arm"], json.dumps(run["settings"], sort_keys=True)) for run in results["runs"]}
    for arm in args.arms:
        for point in itertools.product(*values):
            settings = dict(zip(names, point))
            if (arm, json.dumps(settings, sort_keys=True)) in done:
                continue
            runner = Arm(args, arm, settings, args.seed, "val")
            with runner.own_streams():
                train(runner.trainer, steps=runner.steps, record=runner.record)
            run = {"arm": arm, "settings": settings, "seed": args.seed, "validation": runner.evaluate()}
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
            results_path.write_text(json.dumps({**results, "machine": machine()}, indent=2))


def compare(args) -> None:
    results_path = args.output / f"compare-{args.pair}-{args.scene.name}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"seeds": {}}
    settings = {"BN": parse_settings(args.bn), "BN off": parse_settings(args.bn_off)}
    budgets = [60.0 * minutes for minutes in sorted(args.minutes)]
    for seed in args.seeds:
        if str(seed) in results["seeds"]:
            continue
        arms = [Arm(args, arm, settings[arm], seed, "test") for arm in ARMS]
        pending = {arm.name: list(budgets) for arm in arms}

        def unfinished(arm: Arm) -> bool:
            return arm.record.steps < arm.steps or bool(pending[arm.name])

        while any(unfinished(arm) for arm in arms):
            arm = min((arm for arm in arms if unfinished(arm)), key=lambda candidate: candidate.record.seconds)
            with arm.own_streams():
                train(arm.trainer, steps=arm.record.steps + 1, record=arm.record)
            while pending[arm.name] and arm.record.seconds >= pending[arm.name][0]:
                arm.checks[f"{pending[arm.name].pop(0) / 60:g} min"] = arm.evaluate()
            if arm.record.steps == arm.steps:
                arm.checks[f"{arm.steps} steps"] = arm.evaluate()
        results["seeds"][str(seed)] = {arm.name: {"settings": arm.settings, "checks": arm.checks} for arm in arms}
        print(json.dumps({"seed": seed, **results["seeds"][str(seed)]}), flush=True)
        results_path.write_text(json.dumps({**results, "machine": machine(), "threads": torch.get_num_threads()},
                                           indent=2))


def verdict(differences: list[float], spread: float) -> str:
    """'holds' when BN wins on every seed by more than the seeds spread the arms, 'does not hold' when it
    loses so on every seed, 'within seed noise' otherwise."""
    mean = statistics.mean(differences)
    if min(differences) > 0 and mean > spread:
        return "holds"
    if max(differences) < 0 and -mean > spread:
        return "does not hold"
    return "within seed noise"


def summary(args) -> None:
    lines = []
    searches: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(args.output.glob("search-*.json")):
        results = json.loads(path.read_text())
        searches.setdefault((results["pair"], results["scene"]), []).extend(results["runs"])
    for (pair, scene), runs in searches.items():
        lines.append(f"\nsearch {pair} on {scene}: validation PSNR (dB) at the preset's steps, one seed")
        for arm in ARMS:
            ranked = sorted((run for run in runs if run["arm"] == arm), key=lambda run: -run["validation"]["psnr"])
            for rank, run in enumerate(ranked):
                lines.append(f"  {arm:6} {json.dumps(run['settings'])}: {run['validation']['psnr']:.2f}"
                             + ("  <- chosen" if rank == 0 else ""))
    for path in sorted(args.output.glob("compare-*.json")):
        seeds = json.loads(path.read_text())["seeds"]
        checks = list(next(iter(seeds.values()))["BN"]["checks"])
        lines.append(f"\n{path.stem}: test PSNR (dB), eval mode, {len(seeds)} seeds; mean ± std; BN - BN off per seed")
        for check in checks:
            scores = {arm: [seed[arm]["checks"][check]["psnr"] for seed in seeds.values()] for arm in ARMS}
            steps = {arm: [seed[arm]["checks"][check]["steps"] for seed in seeds.values()] for arm in ARMS}
            differences = [bn - off for bn, off in zip(scores["BN"], scores["BN off"])]
            spread = max(statistics.pstdev(values) for values in scores.values())
            cells = [f"{arm} {statistics.mean(scores[arm]):.2f} ± {statistics.pstdev(scores[arm]):.2f} "
                     f"({statistics.mean(steps[arm]):.0f} steps)" for arm in ARMS]
            lines.append(f"  {check:>11}: " + " | ".join(cells) + " | differences "
                         + ", ".join(f"{d:+.2f}" for d in differences) + f" -> {verdict(differences, spread)}")
    text = "\n".join(lines).strip() + "\n"
    print(text)
    (args.output / "summary.txt").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    holdout_command = commands.add_parser("holdout")
    holdout_command.add_argument("--scene", type=Path, required=True, help="a folder holding transforms.json")
    holdout_command.add_argument("--output", type=Path, required=True, help="the copy's folder")
    for name in ("search", "compare", "summary"):
        command = commands.add_parser(name)
        command.add_argument("--output", type=Path, default=Path("outputs/verdict"))
        if name == "summary":
            continue
        command.add_argument("--pair", choices=PAIRS, required=True)
        command.add_argument("--scene", type=Path, required=True)
        command.add_argument("--threads", type=int, default=1, help="torch threads (default 1: two runs fit 2 cores)")
        command.add_argument("--steps", type=int, help="training steps (default: the preset's)")
        command.add_argument("--downscale-factor", type=int, help="read the scene's images_N")
        command.add_argument("--check-pixels", type=int, help="measure checks on this many eval pixels")
        if name == "search":
            command.add_argument("--grid", nargs="+", required=True, help="NAME=V1,V2,... searched jointly")
            command.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
            command.add_argument("--seed", type=int, default=0)
        else:
            command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
            command.add_argument("--minutes", type=float, nargs="+", default=[1.0, 2.0], help="equal-time checks")
            command.add_argument("--bn", nargs="*", default=[], help="NAME=VALUE settings of the BN arm")
            command.add_argument("--bn-off", nargs="*", default=[], help="NAME=VALUE settings of the BN-off arm")
    args = parser.parse_args()
    if args.command == "holdout":
        holdout(args)
        return
    args.output.mkdir(parents=True, exist_ok=True)
    if args.command == "summary":
        summary(args)
        return
    torch.set_num_threads(args.threads)
    {"search": search, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
