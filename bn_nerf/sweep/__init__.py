"""Grids of runs (the paper's Table 1) as Ray tasks: config -> cells -> run folders -> table.

A cell is one ordinary task-command run, nothing more; see `cells.py`. `bn-inr sweep` is
`command.py`; `engine.py` is the only module that knows Ray.
"""
