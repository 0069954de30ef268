"""A sweep's folder -> Table 1: ours beside the paper's, the difference, the image task's
rate-distortion plot, and a verdict on each claim the paper makes from the table.

Works on a partial sweep: a cell without metrics.json shows as "…", and a claim whose comparisons
need such a cell is "undecided". Each value is the eval-mode metric of the cell's kept iterate,
averaged over the task's inputs and seeds; with several seeds a table of their spread (largest
minus smallest seed mean) follows.

Files: table1.md, table1.csv (one row per task x size and table: ours, paper, delta, seed
spread; NeRF rows in the NeRF columns), cells.csv (every cell, finished or not), and
rate_distortion.png when the sweep has image cells.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Sequence

from bn_nerf.io.plots import save_rate_distortion_plot
from bn_nerf.networks.presets import PAPER_METHODS
from bn_nerf.sweep.cells import ERROR_FILE, Cell
from bn_nerf.sweep.config import SweepConfig
from bn_nerf.sweep.nerf_results import read_ns_eval
from bn_nerf.sweep.paper import CLAIMS, COLUMN_TITLES, NERF_CLAIMS, NERF_COLUMNS, NERF_METRICS, NERF_TABLE, TABLE1, Claim
from bn_nerf.sweep.tasks import SWEEP_TASKS

TABLE_MD, TABLE_CSV, CELLS_CSV, RATE_DISTORTION = "table1.md", "table1.csv", "cells.csv", "rate_distortion.png"
MISSING = "…"
RANK_MARKS = ("¹", "²", "³")
METRIC_LABELS = {"psnr": "PSNR, dB", "iou": "IoU"}
Size = tuple[int, int]


@dataclass
class Results:
    """Table values: task -> size -> method -> number."""

    methods: list[str]
    ours: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    # Largest minus smallest seed mean, where there are several seeds.
    spread: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    # task -> net sizes in the configuration's order
    sizes: dict = field(default_factory=dict)

    def value(self, task: str, size: Size, method: str) -> float | None:
        return self.ours[task][size].get(method)


def collect(cells: Sequence[Cell]) -> Results:
    """Means over inputs and seeds of each task x size x method whose cells have all finished."""
    methods = [m for m in PAPER_METHODS if any(c.method == m for c in cells)]
    methods += [m for m in dict.fromkeys(c.method for c in cells) if m not in methods]
    results = Results(methods)
    groups: dict = defaultdict(list)
    for cell in cells:
        groups[(cell.task, (cell.depth, cell.width), cell.method)].append(cell)
    for (task, size, method), group in groups.items():
        results.sizes.setdefault(task, [])
        if size not in results.sizes[task]:
            results.sizes[task].append(size)
        metric = SWEEP_TASKS[task].metric
        all_metrics = [cell.metrics() for cell in group]
        if any(metrics is None for metrics in all_metrics):
            continue
        by_seed: dict[int, list[float]] = defaultdict(list)
        for cell, metrics in zip(group, all_metrics):
            by_seed[cell.seed].append(metrics[metric])
        seed_means = [mean(values) for values in by_seed.values()]
        results.ours[task][size][method] = mean(seed_means)
        if len(seed_means) > 1:
            results.spread[task][size][method] = max(seed_means) - min(seed_means)
    return results


def _task_order(results: Results) -> list[str]:
    return [task for task in SWEEP_TASKS if task in results.sizes]


def _format(task: str, value: float | None, signed: bool = False, extra_digits: int = 0) -> str:
    if value is None:
        return MISSING
    digits = (3 if SWEEP_TASKS[task].metric == "iou" else 2) + extra_digits
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ranked_row(task: str, values: dict[str, float], methods: Sequence[str]) -> list[str]:
    """Values with the best, second and third of the row marked (higher is better)."""
    order = sorted((v, m) for m, v in values.items() if m in methods)[::-1]
    rank = {method: index for index, (_, method) in enumerate(order[:len(RANK_MARKS)])}
    cells = []
    for method in methods:
        text = _format(task, values.get(method))
        if method in rank:
            text = (f"**{text}**" if rank[method] == 0 else text) + RANK_MARKS[rank[method]]
        cells.append(text)
    return cells


def _size_text(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def _markdown_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def _grid_tables(results: Results) -> tuple[list[str], dict[str, list[list[str]]]]:
    """The header and the rows of the ours / paper / delta / spread tables."""
    header = ["task", "size", *[COLUMN_TITLES.get(m, m.upper()) for m in results.methods]]
    tables: dict[str, list[list[str]]] = {"ours": [], "paper": [], "delta": [], "spread": []}
    for task in _task_order(results):
        label = f"{SWEEP_TASKS[task].title} ({METRIC_LABELS[SWEEP_TASKS[task].metric]})"
        for size in results.sizes[task]:
            ours = results.ours[task][size]
            paper = TABLE1[task].get(size, {})
            prefix = [label, _size_text(size)]
            tables["ours"].append(prefix + _ranked_row(task, ours, results.methods))
            tables["paper"].append(prefix + _ranked_row(task, paper, results.methods))
            tables["delta"].append(prefix + [
                _format(task, ours[m] - paper[m], signed=True) if m in ours and m in paper else MISSING
                for m in results.methods])
            tables["spread"].append(prefix + [_format(task, results.spread[task][size].get(m), extra_digits=1)
                                              for m in results.methods])
    return header, tables


@dataclass(frozen=True)
class Verdict:
    text: str
    outcome: str  # "holds", "does not hold", "undecided"
    detail: str


def judge(claim: Claim, results: Results) -> Verdict | None:
    """The claim on our numbers, over the sizes and methods the sweep has; None when it has none.
    A failed comparison decides it even while others lack cells; holding needs every one."""
    swept_sizes = results.sizes.get(claim.task, [])
    comparisons = [(size, high, low) for size, high, low in claim.comparisons(swept_sizes)
                   if high in results.methods and low in results.methods]
    if not comparisons:
        return None
    value = lambda size, method: results.value(claim.task, size, method)
    decided = [(s, h, l) for s, h, l in comparisons if value(s, h) is not None and value(s, l) is not None]
    waiting = f"; {len(comparisons) - len(decided)} still lack finished cells" if len(decided) < len(comparisons) else ""
    unit = " dB" if SWEEP_TASKS[claim.task].metric == "psnr" else ""
    margins = sorted((value(s, h) - value(s, l), s, h, l) for s, h, l in decided)
    failures = [m for m in margins if m[0] <= 0]
    if failures:
        shown = "; ".join(f"{_size_text(s)}: {COLUMN_TITLES.get(h, h)} {_format(claim.task, value(s, h))}"
                          f" vs {COLUMN_TITLES.get(l, l)} {_format(claim.task, value(s, l))}" for _, s, h, l in failures[:3])
        more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
        return Verdict(claim.text, "does not hold",
                       f"{len(failures)} of {len(decided)} comparisons fail: {shown}{more}{waiting}")
    if waiting:
        return Verdict(claim.text, "undecided", f"{len(decided)} of {len(comparisons)} comparisons hold{waiting}")
    scope = "" if claim.sizes or set(swept_sizes) == set(TABLE1[claim.task]) else f"on the sweep's {len(swept_sizes)} size(s), "
    margin, s, h, l = margins[0]
    spread = max(results.spread[claim.task][s].get(h, 0.0), results.spread[claim.task][s].get(l, 0.0))
    caution = f", within the seed spread {_format(claim.task, spread)}{unit}" if spread >= margin else ""
    return Verdict(claim.text, "holds", f"{scope}smallest margin {_format(claim.task, margin, signed=True)}{unit} "
                   f"({COLUMN_TITLES.get(h, h)} vs {COLUMN_TITLES.get(l, l)} at {_size_text(s)}{caution})")


def nerf_values(config: SweepConfig) -> dict[str, dict[str, float]]:
    """NeRF column -> metric -> mean over the column's ns-eval files."""
    values: dict[str, dict[str, float]] = {}
    for column, files in config.nerf:
        evaluations = [read_ns_eval(path) for path in files]
        values[column] = {metric: mean(e[metric] for e in evaluations) for metric in NERF_METRICS
                          if all(metric in e for e in evaluations)}
    return values


def judge_nerf(ours: dict[str, dict[str, float]]) -> list[Verdict]:
    verdicts = []
    for text, high, low in NERF_CLAIMS:
        if high in ours and low in ours:
            margin = ours[high]["psnr"] - ours[low]["psnr"]
            outcome = "holds" if margin > 0 else "does not hold"
            verdicts.append(Verdict(text, outcome, f"{high} {ours[high]['psnr']:.2f} vs {low} {ours[low]['psnr']:.2f} dB ({margin:+.2f})"))
    return verdicts


def _runs_summary(log_path: Path) -> list[str]:
    """Lines on each sweep invocation recorded in the folder's log: machine, load, wall time."""
    if not log_path.is_file():
        return ["No sweep invocation is recorded in this folder (sweep_log.jsonl)."]
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    ended = {record["invocation"]: record for record in records if record["event"] == "end"}
    lines, total = [], 0.0
    for record in (r for r in records if r["event"] == "start"):
        end = ended.get(record["invocation"])
        machine = f"{record['cpu']}, {record['cores']} cores" + (f", {record['gpus']}" if record.get("gpus") else "")
        if end is None:
            lines.append(f"- {record['time']}: `{record['command']}` on {machine}, load {record['load']}; "
                         f"interrupted (no end recorded)")
            continue
        total += end["wall_seconds"]
        lines.append(f"- {record['time']}: `{record['command']}` on {machine}; {end['cells_run']} cells run "
                     f"({end['cells_failed']} failed) in {end['wall_seconds'] / 60:.1f} min wall; "
                     f"load average {record['load']} at the start, {end['load']} at the end")
    completed = len(ended)
    return lines + [f"- Wall time of the {completed} completed invocation(s): {total / 60:.1f} min." if completed
                    else "- No invocation has completed yet."]


def write_tables(config: SweepConfig, cells: Sequence[Cell], out: Path, log_path: Path) -> Path:
    """Write table1.md, table1.csv, cells.csv and rate_distortion.png into `out`; returns table1.md."""
    out.mkdir(parents=True, exist_ok=True)
    results = collect(cells)
    header, grid = _grid_tables(results)
    nerf = nerf_values(config)
    verdicts = [v for v in (judge(claim, results) for claim in CLAIMS) if v is not None] + judge_nerf(nerf)
    finished_metrics = [metrics for cell in cells if (metrics := cell.metrics()) is not None]
    finished = len(finished_metrics)
    failed = [cell for cell in cells if cell.failed]

    lines = [f"# Table 1: {config.title}", "",
             f"Configuration `{config.path}`; {finished} of {len(cells)} cells finished"
             + (f", {len(failed)} failed (see their error.txt)" if failed else "") + ". "
             "Each value: eval-mode metric (BatchNorm with running statistics re-estimated) of the iterate "
             "the training protocol keeps, mean over inputs and seeds; " + MISSING + " = cells not finished. "
             "Marks: **best**¹, second², third³ of the row.", "", *_runs_summary(log_path),
             f"- Training time of the finished cells: {sum(m['seconds'] for m in finished_metrics) / 60:.1f} "
             f"cell-minutes (their metrics.json `seconds`).", ""]
    if results.sizes:
        lines += ["## Ours", "", *_markdown_table(header, grid["ours"]), "",
                  "## Paper", "", *_markdown_table(header, grid["paper"]), "",
                  "## Ours minus paper", "", *_markdown_table(header, grid["delta"]), ""]
        if any(results.spread[t][s] for t in results.spread for s in results.spread[t]):
            lines += ["## Seed spread (largest minus smallest seed mean)", "",
                      *_markdown_table(header, grid["spread"]), ""]
    if nerf:
        nerf_rows = [[metric.upper() + (" ↓" if metric == "lpips" else ""), source,
                      *[(f"{table[c][metric]:.3f}" if metric != "psnr" else f"{table[c][metric]:.2f}")
                        if c in table and metric in table[c] else MISSING for c in NERF_COLUMNS]]
                     for metric in NERF_METRICS
                     for source, table in (("ours", nerf), ("paper", {c: {metric: NERF_TABLE[metric][c]} for c in NERF_COLUMNS}))]
        lines += ["## 5D NeRF (from ns-eval outputs)", "",
                  *[f"- {column}: mean of {len(files)} ns-eval file(s): " + ", ".join(f"`{p}`" for p in files)
                    for column, files in config.nerf], "",
                  *_markdown_table(["metric", "source", *NERF_COLUMNS], nerf_rows), ""]
    if verdicts:
        lines += ["## The paper's claims on these numbers", "",
                  *[f"- {v.text}: **{v.outcome}** — {v.detail}" for v in verdicts], ""]
    image_rows = [metrics for cell in cells if cell.task == "image" and (metrics := cell.metrics()) is not None]
    if image_rows:
        save_rate_distortion_plot(out / RATE_DISTORTION, image_rows,
                                  title=f"{config.title}: image task, mean over inputs and seeds")
        lines += ["## Rate-distortion (image task; bits per pixel of the BN-folded network, 32-bit)", "",
                  f"![rate-distortion]({RATE_DISTORTION})", ""]
        file_rows = _file_rate_rows(image_rows, results.methods)
        if file_rows:
            lines += ["## 2D image in real bytes", "",
                      "Each image cell's network written as a `.bnr` file (`bn-inr encode`'s coding): bits per pixel = "
                      "file bytes x 8 / pixels, header included, and the decoded image's PSNR; mean over inputs and seeds.",
                      "", *_markdown_table(["size", *[COLUMN_TITLES.get(m, m.upper()) for m in results.methods]], file_rows), ""]
    (out / TABLE_MD).write_text("\n".join(lines))
    _write_csv(out / TABLE_CSV, results, nerf)
    _write_cells_csv(out / CELLS_CSV, cells)
    return out / TABLE_MD


def _file_rate_rows(image_rows: Sequence[dict], methods: Sequence[str]) -> list[list[str]]:
    """Per net size, each method's mean real rate and decoded PSNR, over the image runs coded as files."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for metrics in image_rows:
        if "bpp_file" in metrics:
            groups[(metrics["depth"], metrics["width"])][metrics["method"]].append(metrics)
    return [[_size_text(size), *[f"{mean(m['bpp_file'] for m in runs[method]):.3f} bpp, "
                                 f"{mean(m['psnr_file'] for m in runs[method]):.2f} dB" if runs[method] else MISSING
                                 for method in methods]]
            for size, runs in groups.items()]


def _write_csv(path: Path, results: Results, nerf: dict) -> None:
    columns = ["table", "task", "metric", "size", *results.methods, *NERF_COLUMNS]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for task in _task_order(results):
            for size in results.sizes[task]:
                paper = TABLE1[task].get(size, {})
                ours = results.ours[task][size]
                for table, values in (("ours", ours), ("paper", paper),
                                      ("delta", {m: ours[m] - paper[m] for m in ours if m in paper}),
                                      ("seed_spread", results.spread[task][size])):
                    writer.writerow({"table": table, "task": task, "metric": SWEEP_TASKS[task].metric,
                                     "size": _size_text(size), **{m: values[m] for m in results.methods if m in values}})
        for metric in NERF_METRICS:
            for table, values in (("ours", {c: v[metric] for c, v in nerf.items() if metric in v}),
                                  ("paper", NERF_TABLE[metric])):
                if values:
                    writer.writerow({"table": table, "task": "nerf", "metric": metric, "size": "", **values})


def _write_cells_csv(path: Path, cells: Sequence[Cell]) -> None:
    rows = []
    for cell in cells:
        metrics = cell.metrics()
        status = "finished" if metrics is not None else "failed" if cell.failed else "not finished"
        row = {"cell": cell.name, "status": status, **(metrics or {})}
        if cell.failed:
            row["error"] = (cell.folder / ERROR_FILE).read_text().splitlines()[0]
        rows.append(row)
    leading = ["cell", "status", "task", "input", "method", "depth", "width", "seed", "psnr", "iou", "ssim",
               "kept", "kept_iteration", "iterations", "seconds", "params", "error"]
    present = {key for row in rows for key in row}
    columns = [k for k in leading if k in present] + sorted(present - set(leading))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
