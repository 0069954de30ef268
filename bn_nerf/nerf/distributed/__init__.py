"""What makes several processes train the method one process trains (processes.py). Beneath the
samplers, models and engine that all call it (a grid refresh is shared out between processes, as
is the training batch); imports no other part of the plugin."""
