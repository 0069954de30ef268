"""Run a command and record the resident memory (RSS) of its whole process tree over time.

    python scripts/peak_memory.py --log train.log -- .venv/bin/ns-train bn-diner-cpu --data data/fox

The command's own output goes to --log; this prints the tree's RSS every --every seconds (sampled
five times a second, so short peaks between prints count) and, at the end, the exit status, the wall
time and the peak. Every memory figure of BENCHMARKS.md "Memory and rendering at a phone's resolution"
comes from it; results/benchmark-memory/ holds its timelines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_SECONDS = 0.2


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all of its descendants (0 for one that has exited)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(tree_rss_bytes(int(child)) for child in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, required=True, help="where the command's output goes")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between printed lines")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("name the command to run after --")
    with args.log.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started = time.time()
        peak = 0
        printed = 0.0
        while process.poll() is None:
            rss = tree_rss_bytes(process.pid)
            peak = max(peak, rss)
            elapsed = time.time() - started
            if elapsed - printed >= args.every:
                print(f"{elapsed:7.1f}s rss {rss / 2**30:.2f} GB peak {peak / 2**30:.2f}", flush=True)
                printed = elapsed
            time.sleep(SAMPLE_SECONDS)
    print(f"exit {process.returncode} after {time.time() - started:.1f}s, peak RSS {peak / 2**30:.2f} GB", flush=True)
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
