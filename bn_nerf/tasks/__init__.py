"""The sidecar tasks (image, CT, MRI, occupancy): a task is a signal, a forward operator, a loss and
metrics (`base.py`), fitted by the one training loop (`trainer.py`) under the options every task
command shares (`arguments.py`, `runs.py`); `encode.py` is `bn-inr encode`, the image task's fit
written as a .bnr file by bn_nerf.codec."""
