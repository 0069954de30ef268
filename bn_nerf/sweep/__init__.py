"""Grids of runs (the paper's Table 1), on Ray or a local process pool: config -> cells -> run
folders -> table.

A cell is one ordinary task-command run, nothing more; see `cells.py`. `bn-inr sweep` is
`command.py`; `engine.py` runs the cells as Ray tasks and is the only module that knows Ray,
`local_engine.py` runs them in spawned worker processes on this machine (`--engine local`).
"""
