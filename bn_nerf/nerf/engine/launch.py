"""`bn-nerf-train`: nerfstudio's `ns-train` (same arguments, every method) whose
`--machine.num-devices N` also starts N processes on a CPU, on a gloo group.

On CUDA, `ns-train ... --machine.num-devices N [--machine.num-machines M --machine.dist-url ...]`
is nerfstudio's launcher, and `bn-nerf-train` leaves it unchanged. That launcher's worker asserts
CUDA before it joins a group, so on a CPU it never starts a second process; `bn-nerf-train` runs
nerfstudio's own `main` and `launch` (the run folder, config.yml, spawning, Ctrl-C) with a worker
that starts a gloo group for any other device and hands CUDA runs to nerfstudio's worker.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, Callable, Iterator, Literal

import torch.distributed as dist
import tyro

from nerfstudio.configs.config_utils import convert_markup_to_ansi
from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.scripts import train as nerfstudio_train
from nerfstudio.utils import comms

NERFSTUDIO_WORKER = nerfstudio_train._distributed_worker


def process_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_devices_per_machine: int,
    machine_rank: int,
    dist_url: str,
    config: TrainerConfig,
    timeout: timedelta = timedelta(minutes=30),
    device_type: Literal["cpu", "cuda", "mps"] = "cuda",
) -> Any:
    """nerfstudio's `_distributed_worker` (same arguments) for every device: CUDA goes to nerfstudio's
    own; any other device starts a gloo group with the same machine-local groups, which nerfstudio's
    worker would too but for its assertion that CUDA is present."""
    if device_type == "cuda":
        return NERFSTUDIO_WORKER(local_rank, main_func, world_size, num_devices_per_machine, machine_rank, dist_url,
                                  config, timeout, device_type)
    global_rank = machine_rank * num_devices_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    for machine in range(world_size // num_devices_per_machine):
        group = dist.new_group(list(range(machine * num_devices_per_machine, (machine + 1) * num_devices_per_machine)))
        if machine == machine_rank:
            comms.LOCAL_PROCESS_GROUP = group
    try:
        output = main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
        return output
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def workers_on_any_device() -> Iterator[None]:
    """nerfstudio's launcher, within this block, spawning `process_worker`s instead of its own
    CUDA-only workers (it looks its worker up by name when it spawns)."""
    nerfstudio_train._distributed_worker = process_worker
    try:
        yield
    finally:
        nerfstudio_train._distributed_worker = NERFSTUDIO_WORKER


def main() -> None:
    """`bn-nerf-train`: `ns-train` with the same arguments, whose `--machine.num-devices N` also
    starts N processes on a CPU (gloo) for these methods and nerfstudio's."""
    tyro.extras.set_accent_color("bright_yellow")
    config = tyro.cli(AnnotatedBaseConfigUnion, description=convert_markup_to_ansi(nerfstudio_train.__doc__))
    with workers_on_any_device():
        nerfstudio_train.main(config)
