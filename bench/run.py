"""node-agent benchmarks: ``python -m bench.run [--quick]``.

Prints one table. Every figure is measured in this run next to a baseline measured
the same way in the same run, because the machines are noisy: a ratio means more
than an absolute time. Not a test: nothing here passes or fails.

- forwarding: 2,000,000 Blender-like lines from the stand-in worker through the
  agent to a file, against the same producer piped to ``cat`` into a file. Whole-run
  wall time, wall time net of fixed start-up (a 0-line run subtracted from each),
  and forwarder CPU per line (producer CPU subtracted);
- resident memory of the agent, against a bare Python interpreter;
- stop latency: worker exit -> agent exit for a tree that obeys SIGTERM; SIGTERM ->
  agent exit for one that ignores it, against the grace period;
- start-up, idle CPU and wake-ups, CPU while waiting out the stop grace, CPU per
  restart, against supervisord running the same program (``bench.rest``).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import rest, supervisord
from node_agent.sim.standins.imds import FakeImds
from node_agent.sim.standins.manager import FakeManager
from tests.agent import STANDIN, worker_node
from tests.helpers import wait_until

LINES = 2_000_000
PER_WRITE = 50  # ~3.6 KB writes, about what C stdio sends down a pipe


def _producer(steps: str, work: Path) -> list[str]:
    return ["env", f"FAKE_WORKER={steps}", f"FAKE_WORKER_DIR={work}", sys.executable, str(STANDIN)]


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], env: dict[str, str], stdout: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the process and everything it waited for)."""
    with open(stdout, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = 0
    return wall, _cpu(usage)


# The stand-in Manager and Metadata Service every agent here talks to (set in main):
# the Metadata Service answers, so the agent polls it once a second, as on Azure.
SERVICES: dict[str, str] = {}


def _agent_env(root: Path, steps: str, **extra: str) -> dict[str, str]:
    node = worker_node(root)
    return {
        **node.environ,
        "PATH": node.environ["PATH"] + ":" + os.environ["PATH"],
        "FAKE_WORKER": steps,
        "FAKE_WORKER_DIR": str(root),
        **SERVICES,
        **extra,
    }


def _running_agent(root: Path, steps: str, **extra: str) -> subprocess.Popen[bytes]:
    """Start the agent with the stand-in worker doing ``steps``; return once the
    worker runs."""
    agent = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "run"],
        env=_agent_env(root, f"count,{steps}", **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = root / "shared" / ".node-agent" / "state.json"
    wait_until(
        lambda: (root / "runs").exists() and state.exists() and b'"running"' in state.read_bytes(),
        30,
    )
    return agent


def forwarding(
    tmp: Path, lines: int, timestamps: bool, repeat: int, per_write: int = PER_WRITE
) -> dict[str, float]:
    """Agent vs ``producer | cat > file``; medians over ``repeat`` runs. The 0-line
    runs (``cat0``, ``agent0``) measure fixed start-up, subtracted for the net figures."""
    steps = f"lines:{lines}:{per_write},exit:0"
    empty = "exit:0"
    agent = [sys.executable, "-m", "node_agent", "run"] + (["--timestamps"] if timestamps else [])
    base_env = dict(os.environ)
    results: dict[str, list[float]] = {
        k: []
        for k in (
            "cat",
            "cat0",
            "agent",
            "agent0",
            "cat_cpu",
            "cat0_cpu",
            "agent_cpu",
            "agent0_cpu",
            "producer_cpu",
        )
    }
    for i in range(repeat):
        for key, producer_steps in (("cat", steps), ("cat0", empty)):
            pipeline = " ".join(shlex.quote(a) for a in _producer(producer_steps, tmp)) + " | cat"
            wall, cpu = _timed(["sh", "-c", pipeline], base_env, tmp / f"{key}.out")
            results[key].append(wall)
            results[f"{key}_cpu"].append(cpu)
        for key, producer_steps in (("agent", steps), ("agent0", empty)):
            root = tmp / f"node-{timestamps}-{i}-{key}"
            wall, cpu = _timed(agent, _agent_env(root, producer_steps), tmp / f"{key}.out")
            results[key].append(wall)
            results[f"{key}_cpu"].append(cpu)
        _, producer_cpu = _timed(_producer(steps, tmp), base_env, Path(os.devnull))
        results["producer_cpu"].append(producer_cpu)
    med = {k: statistics.median(v) for k, v in results.items()}
    expected = lines * (71 + (25 if timestamps else 0))
    size = (tmp / "agent.out").stat().st_size
    assert size >= expected, f"agent output {size} bytes, expected at least {expected}"
    return {
        "wall_ratio": med["agent"] / med["cat"],
        "net_ratio": (med["agent"] - med["agent0"]) / (med["cat"] - med["cat0"]),
        # CPU of the forwarder alone: minus start-up (the 0-line run) and the producer.
        "agent_us_per_line": (med["agent_cpu"] - med["agent0_cpu"] - med["producer_cpu"])
        / lines
        * 1e6,
        "cat_us_per_line": (med["cat_cpu"] - med["cat0_cpu"] - med["producer_cpu"]) / lines * 1e6,
        "cat_s": med["cat"],
        "agent_s": med["agent"],
    }


def memory(tmp: Path) -> dict[str, float]:
    """The agent's RSS with a quiet worker; baseline: a bare interpreter's."""
    agent = _running_agent(tmp / "memory", "wait")
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        time.sleep(rest.SETTLE)
        rss = psutil.Process(agent.pid).memory_info().rss / 2**20
        bare_rss = psutil.Process(bare.pid).memory_info().rss / 2**20
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        bare.kill()
        bare.wait()
    return {"rss_mb": rss, "bare_rss_mb": bare_rss}


def stop_latency(tmp: Path, runs: int, grace: float) -> dict[str, float]:
    """Worker exit -> agent exit (obeying tree), SIGTERM -> agent exit (ignoring)."""
    obeying, ignoring = [], []
    for i in range(runs):
        root = tmp / f"stop-{i}"
        agent = _running_agent(root, "term-stamp,wait", NODE_AGENT_STOP_GRACE=str(grace))
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        obeying.append(time.time() - float((root / "exited").read_text()))
    for i in range(max(1, runs // 4)):
        agent = _running_agent(
            tmp / f"ignore-{i}", "ignore-term,wait", NODE_AGENT_STOP_GRACE=str(grace)
        )
        sent = time.perf_counter()
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        ignoring.append(time.perf_counter() - sent)
    return {
        "obey_median_ms": statistics.median(obeying) * 1000,
        "obey_max_ms": max(obeying) * 1000,
        "ignore_median_s": statistics.median(ignoring),
        "grace_s": grace,
    }


def main() -> None:
    """Run every benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer lines and shorter runs")
    parser.add_argument("--only-forwarding", action="store_true")
    parser.add_argument(
        "--only-rest", action="store_true", help="only start-up, idle, stop grace and restart"
    )
    args = parser.parse_args()
    lines = LINES // 10 if args.quick else LINES
    repeat = 1 if args.quick else 3
    manager, imds = FakeManager().start(), FakeImds().start()
    SERVICES.update(FLAMENCO_MANAGER_URL=manager.url, NODE_AGENT_IMDS_URL=imds.url)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows = rest.rows(_setup(tmp, manager), args.quick)
        if args.only_rest:
            _print(rows)
            return
        forwarded = {
            (per_write, stamps): forwarding(tmp, lines, stamps, repeat, per_write)
            for per_write in (1, PER_WRITE)
            for stamps in (False, True)
        }
        if args.only_forwarding:
            for key, figures in forwarded.items():
                print(key, {k: round(v, 3) for k, v in figures.items()})
            return
        mem = memory(tmp)
        stop = stop_latency(tmp, 4 if args.quick else 12, 2.0)
    for (per_write, stamps), f in forwarded.items():
        what = f"{lines:,} lines, {'one line' if per_write == 1 else f'{per_write} lines'}/write"
        what += ", timestamps" if stamps else ""
        target = "<= 1.6" if stamps else "<= 1.15"
        rows += [
            (
                f"forwarding {what}: wall",
                f"{f['wall_ratio']:.2f}x cat",
                f"{f['agent_s']:.2f} s vs {f['cat_s']:.2f} s",
                target,
            ),
            ("  net of start-up (0-line run subtracted)", f"{f['net_ratio']:.2f}x cat", "", target),
            (
                "  forwarder CPU per line",
                f"{f['agent_us_per_line']:.3f} us",
                f"cat {f['cat_us_per_line']:.3f} us",
                "~0.4 us (supervisord)",
            ),
        ]
    rows += [
        (
            "resident memory",
            f"{mem['rss_mb']:.1f} MB",
            f"bare python {mem['bare_rss_mb']:.1f} MB",
            "<= 40 MB",
        ),
        (
            "stop, obeying tree (worker exit -> agent exit)",
            f"median {stop['obey_median_ms']:.0f} ms",
            f"max {stop['obey_max_ms']:.0f} ms",
            "<= 100 ms",
        ),
        (
            "stop, ignoring tree (SIGTERM -> agent exit)",
            f"{stop['ignore_median_s']:.2f} s",
            f"grace {stop['grace_s']:.1f} s",
            "= grace",
        ),
    ]
    _print(rows)


def _setup(tmp: Path, manager: FakeManager) -> rest.Setup:
    """The C program, the stand-in services (set in ``main``) and supervisord."""
    found, note = supervisord.install(tmp / "supervisord-venv")
    return rest.Setup(tmp, rest.build_child(tmp), dict(SERVICES), manager, found, note)


def _print(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("benchmark", "result", "baseline / detail", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
