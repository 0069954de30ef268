"""Process defaults a bn-inr run chooses: glibc keeping freed memory, and the thread count."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from bn_nerf.cli import main
from bn_nerf.runtime import choose_threads, usable_cores

FAULT_PROBE = textwrap.dedent("""
    import resource, sys, torch
    from bn_nerf.runtime import keep_freed_memory
    torch.set_num_threads(1)
    if sys.argv[1] == "keep":
        assert keep_freed_memory()

    def step():  # a training step's pattern: activation-sized blocks alive together, then freed
        blocks = [torch.ones(40 * 2**20 // 4) for _ in range(4)]
        return sum(float(block[-1]) for block in blocks)

    for _ in range(3):  # the first steps fault their blocks in either way
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    faults = {mode: int(subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("glibc", "keep")}
    # 5 steps x 160 MB is 200,000 pages of 4 kB: glibc maps and faults each block in again; kept, none.
    assert faults["glibc"] > 100_000 and faults["keep"] < 1_000, faults


def test_threads_given_or_already_lowered_are_kept_and_said():
    previous = torch.get_num_threads()
    try:
        assert choose_threads(1, torch.device("cpu")) == "threads: 1 (--threads)" and torch.get_num_threads() == 1
        assert choose_threads(None, torch.device("cpu")).startswith("threads: 1 (one usable core, or set so")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


@pytest.mark.skipif(usable_cores() < 2, reason="a choice needs two cores")
def test_the_probe_sets_the_thread_count_it_reports():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        line = choose_threads(None, torch.device("cpu"))
        chosen = torch.get_num_threads()
        assert chosen in (1, 2) and line.startswith(f"threads: {chosen} (a probe took ")
    finally:
        torch.set_num_threads(previous)


def test_a_run_prints_how_its_threads_were_chosen(tmp_path, capsys):
    assert main(["image", "--quiet", "--downscale", "32", "--depth", "1", "--width", "4", "--iterations", "1",
                 "--threads", "1", "--out", str(tmp_path)]) == 0
    assert "threads: 1 (--threads)\n" in capsys.readouterr().out
