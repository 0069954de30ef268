from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(items):
    """Run the tests that fork processes (tests/test_nerf_distributed.py) first. Forked from a pytest
    process that has already trained a NeRF in-process (test_nerf_contraction's capture training), the
    children hung in their first gloo collective until its 60 s timeout; forked before, they pass."""
    items.sort(key=lambda item: item.path.name != "test_nerf_distributed.py")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # The tests' networks are small: a second thread gains nothing, and on a 2-core machine whose
    # other core is busy (CI, a neighbour's job) two OpenMP threads per process slow every step
    # many times over (BENCHMARKS.md).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def kill_after_checkpoint(command: list[str], out_dir: Path, at_least: int, timeout: float = 120.0) -> int:
    """Run `bn-inr COMMAND` in a subprocess and SIGKILL it -- no handler, no cleanup, as a power cut
    or an OOM killer would -- once its checkpoint records iteration `at_least` or later. Returns the
    iteration of the checkpoint it left behind, which a resumed run must continue from."""
    checkpoint = out_dir / "checkpoint.pt"
    process = subprocess.Popen([sys.executable, "-m", "bn_nerf.cli", *command, "--quiet", "--threads", "1",
                                "--out", str(out_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the run ended (code {process.returncode}) before it could be killed: {process.stderr.read()}")
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            # Checkpoints are replaced atomically, so whatever file is there loads whole.
            if checkpoint.is_file() and torch.load(checkpoint)["step"] >= at_least:
                break
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -9
    return torch.load(checkpoint)["step"]


def truncated(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to `keep` of its bytes, as an interrupted copy or download leaves it."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path
