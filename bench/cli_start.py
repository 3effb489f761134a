"""How long ``node-agent --version`` and ``--help`` take, against a bare interpreter
and against loading the whole agent (what ``--version`` cost while the command line
imported every command's modules):
``python -m bench.cli_start [--runs N] [--against CHECKOUT]``.

Prints medians of N runs of each, measured in this run, and their ratios to the
bare interpreter; with ``--against``, the same for another checkout's node_agent
(``git worktree add /tmp/before main``), its runs interleaved with these. Not a
test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "node-agent --version": [sys.executable, "-m", "node_agent", "--version"],
    "node-agent run --help": [sys.executable, "-m", "node_agent", "run", "--help"],
    "import node_agent.agent (the whole agent)": [
        sys.executable,
        "-c",
        "import node_agent.cli, node_agent.agent, node_agent.doctor",
    ],
}


def _seconds(argv: list[str], cwd: Path) -> float:
    # -m and -c put the working directory first on sys.path: its node_agent is run.
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each (default 15)")
    parser.add_argument("--against", type=Path, help="another checkout to measure alongside")
    args = parser.parse_args()
    checkouts = {"this": Path(__file__).resolve().parent.parent}
    if args.against:
        checkouts["against"] = args.against.resolve()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for name, argv in CASES.items():
            for label, checkout in checkouts.items():
                times.setdefault((label, name), []).append(_seconds(argv, checkout))
    print(f"{'what':<45} " + " ".join(f"{label + ' (x base)':>20}" for label in checkouts))
    for name in CASES:
        cells = []
        for label in checkouts:
            seconds = statistics.median(times[label, name])
            base = statistics.median(times[label, "python -c pass (baseline)"])
            cells.append(f"{seconds * 1000:>9.0f} ms ({seconds / base:4.1f}x)")
        print(f"{name:<45} " + " ".join(f"{cell:>20}" for cell in cells))


if __name__ == "__main__":
    main()
