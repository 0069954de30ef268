"""Training, as nerfstudio's engine and pipelines: the trainer (trainer.py), the pipelines that split
a global batch across processes and follow a sample budget (pipelines.py), the fused Adam and the
float-keeping scheduler the methods use (optimizers.py, schedulers.py), `bn-nerf-train` (launch.py)
and training under a step or time budget for benchmarks (budget.py)."""
