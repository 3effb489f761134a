"""node-agent at rest and at the edges of the worker's life, each figure next to
supervisord's (``bench.supervisord``) running the same C program (``bench/child.c``)
in the same run:

- start: launch -> the worker's exec, with a ``blender --version`` that takes 2 s
  (what the start-up health report runs);
- idle: CPU (share of a core) and wake-ups per second (context switches of every
  thread, from /proc/PID/task/*/status) over a window, with a quiet worker and
  Scheduled Events watched (the stand-in Metadata Service answering);
- grace: CPU while waiting out the stop grace for a process that ignores SIGTERM (for
  node-agent a leftover of the worker, for supervisord its program);
- restart: CPU per restart of a worker that exits at once asking to be restarted.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench import supervisord
from node_agent.node.flavour import Flavour
from node_agent.node.layout import Layout
from node_agent.sim.standins.manager import FakeManager
from tests.agent import worker_node
from tests.helpers import wait_until
from tests.nodes import write_executable

CHILD_SOURCE = Path(__file__).with_name("child.c")
SLOW_CHECK = 2.0  # seconds blender --version takes in the start row
SETTLE = 3.0  # seconds after start-up before a window opens (the keeper looks at 2 s)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Setup:
    """What every run needs: the C program, the stand-in services, supervisord."""

    work: Path
    child: Path
    services: dict[str, str]  # FLAMENCO_MANAGER_URL, NODE_AGENT_IMDS_URL
    manager: FakeManager  # the one at FLAMENCO_MANAGER_URL
    supervisord: Optional[Path]  # None: no baseline (why: ``baseline_note``)
    baseline_note: str


def build_child(work: Path) -> Path:
    """Compile the supervised program."""
    out = work / "child"
    subprocess.run(["cc", "-O2", "-o", str(out), str(CHILD_SOURCE)], check=True)
    return out


# ---- measuring a process ------------------------------------------------------------


def _threads(pid: int) -> dict[str, tuple[int, int]]:
    """CPU nanoseconds (schedstat) and context switches of each live thread."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            cpu = int((task / "schedstat").read_text().split()[0])
            switches = sum(
                int(line.split()[1])
                for line in (task / "status").read_text().splitlines()
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            )
            found[task.name] = (cpu, switches)
    return found


def _spent(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> tuple:
    """CPU seconds and context switches between two looks (threads born between
    them count whole)."""
    cpu = switches = 0
    for tid, (now_cpu, now_switches) in after.items():
        then_cpu, then_switches = before.get(tid, (0, 0))
        cpu += now_cpu - then_cpu
        switches += now_switches - then_switches
    return cpu / 1e9, switches


def _process_cpu(pid: int) -> float:
    """CPU seconds of a whole process, threads that have exited included (clock ticks:
    for windows of many seconds only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


# ---- starting node-agent and supervisord ----------------------------------------------


def _agent(setup: Setup, name: str, mode: str, **extra: str) -> tuple:
    """An agent's argv and environment on a new node running the program in ``mode``;
    the program's file and the node."""
    node = worker_node(setup.work / name)
    shutil.copy(setup.child, node.package_dir("flamenco-worker") / "flamenco-worker")
    file = setup.work / f"{name}.file"
    env = {
        **node.environ,
        "PATH": node.environ["PATH"] + os.pathsep + os.environ["PATH"],
        **setup.services,
        "BENCH_MODE": mode,
        "BENCH_FILE": str(file),
        **extra,
    }
    return [sys.executable, "-m", "node_agent", "run"], env, file, node


@contextlib.contextmanager
def _running(argv: list[str], env: Optional[dict[str, str]], log: Path) -> Iterator:
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _baseline(setup: Setup, name: str, mode: str, stop_wait: float = 10.0) -> tuple:
    """The argv of supervisord running the program, and the program's file."""
    assert setup.supervisord is not None
    work = setup.work / name
    work.mkdir()
    file = work / "file"
    conf = supervisord.config(
        work, setup.child, {"BENCH_MODE": mode, "BENCH_FILE": str(file)}, stop_wait
    )
    return [str(setup.supervisord), "-n", "-c", str(conf)], file


def _wait_running(root: Path) -> None:
    state = root / "shared" / ".node-agent" / "state.json"
    wait_until(lambda: state.exists() and b'"running"' in state.read_bytes(), 60)


# ---- the rows --------------------------------------------------------------------------


def _stamp(file: Path) -> Optional[float]:
    with contextlib.suppress(OSError, ValueError):
        return float(file.read_text())
    return None


def start(setup: Setup, runs: int) -> dict[str, float]:
    """Launch -> worker exec, median over ``runs``, with a blender --version of 2 s."""
    agent, baseline = [], []
    for i in range(runs):
        argv, env, file, node = _agent(setup, f"start-{i}", "stamp")
        write_executable(
            node.package_dir("blender") / "blender",
            f"#!/bin/sh\nsleep {SLOW_CHECK:g}\necho 'Blender 4.2.3 (stand-in)'\n",
        )
        launched = time.time()
        with _running(argv, env, setup.work / f"start-{i}.log"):
            agent.append(wait_until(lambda file=file: _stamp(file), 60) - launched)
        if setup.supervisord is not None:
            argv, file = _baseline(setup, f"start-sup-{i}", "stamp")
            launched = time.time()
            with _running(argv, None, setup.work / f"start-sup-{i}.log"):
                baseline.append(wait_until(lambda file=file: _stamp(file), 60) - launched)
    return {
        "agent_s": statistics.median(agent),
        "agent_max_s": max(agent),
        "baseline_s": statistics.median(baseline) if baseline else float("nan"),
    }


def idle(setup: Setup, seconds: float) -> dict[str, float]:
    """CPU share and wake-ups per second over ``seconds``, quiet worker, both at once.
    The worker is registered and awake on the Manager, as a real one is within
    seconds: the identity keeper then has nothing left to do (the C program never
    registers, and would keep it looking)."""
    argv, env, _, node = _agent(setup, "idle", "quiet")
    credentials = Path(Layout.for_env(node.env).credentials(Flavour.V3))
    credentials.parent.mkdir(parents=True, exist_ok=True)
    worker = setup.manager.add_worker("bench-idle", "bench-secret", status="awake")
    credentials.write_text(f"worker_id: {worker}\nworker_secret: bench-secret\n")
    with contextlib.ExitStack() as stack:
        agent = stack.enter_context(_running(argv, env, setup.work / "idle.log"))
        processes = {"agent": agent.pid}
        if setup.supervisord is not None:
            argv, _ = _baseline(setup, "idle-sup", "quiet")
            sup = stack.enter_context(_running(argv, None, setup.work / "idle-sup.log"))
            processes["baseline"] = sup.pid
        _wait_running(node.root)
        time.sleep(SETTLE)  # the first polls, the report, the identity keeper's looks
        before = {name: _threads(pid) for name, pid in processes.items()}
        time.sleep(seconds)  # the window itself
        after = {name: _threads(pid) for name, pid in processes.items()}
    figures = {"baseline_pct": float("nan"), "baseline_wakeups": float("nan")}
    for name in processes:
        cpu, switches = _spent(before[name], after[name])
        figures[f"{name}_pct"] = cpu / seconds * 100
        figures[f"{name}_wakeups"] = switches / seconds
    return figures


def grace(setup: Setup, seconds: float) -> dict[str, float]:
    """CPU share while waiting out a stop grace of ``seconds`` for a process that
    ignores SIGTERM (the window: from 0.5 s after SIGTERM to 0.5 s before the end)."""
    window = seconds - 1.0
    argv, env, _, node = _agent(setup, "grace", "leftover", NODE_AGENT_STOP_GRACE=f"{seconds:g}")
    figures = {"baseline_pct": float("nan")}
    log = setup.work / "grace.log"
    with _running(argv, env, log) as agent:
        _wait_running(node.root)
        time.sleep(SETTLE)
        figures["agent_pct"] = _stopping(agent, window)
    assert b"left by the worker" in log.read_bytes(), "no leftover: nothing measured"
    if setup.supervisord is not None:
        argv, _ = _baseline(setup, "grace-sup", "ignore", stop_wait=seconds)
        with _running(argv, None, setup.work / "grace-sup.log") as sup:
            time.sleep(SETTLE)
            figures["baseline_pct"] = _stopping(sup, window)
    return figures


def _stopping(process: subprocess.Popen[bytes], window: float) -> float:
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    before = _threads(process.pid)
    time.sleep(window)
    cpu, _ = _spent(before, _threads(process.pid))
    process.wait(60)
    return cpu / window * 100


def restart(setup: Setup, seconds: float) -> dict[str, float]:
    """CPU per restart of a worker that exits at once with the restart exit code
    (node-agent: over ``seconds``, its whole CPU, threads that came and went
    included; supervisord, which restarts about once a second: over three times
    as long, its one thread's)."""
    argv, env, file, _ = _agent(setup, "restart", "exit", NODE_AGENT_MIN_UPTIME="0.000001")
    figures = {"baseline_ms": float("nan"), "baseline_per_s": float("nan")}
    with _running(argv, env, setup.work / "restart.log") as agent:
        wait_until(lambda: file.exists() and file.stat().st_size > 20, 60)
        cpu, starts = _process_cpu(agent.pid), file.stat().st_size
        time.sleep(seconds)
        cpu, starts = _process_cpu(agent.pid) - cpu, file.stat().st_size - starts
    figures["agent_ms"] = cpu / starts * 1000
    figures["agent_per_s"] = starts / seconds
    if setup.supervisord is not None:
        argv, file = _baseline(setup, "restart-sup", "exit")
        with _running(argv, None, setup.work / "restart-sup.log") as sup:
            wait_until(lambda: file.exists() and file.stat().st_size > 1, 60)
            before, starts = _threads(sup.pid), file.stat().st_size
            time.sleep(seconds * 3)
            (cpu, _), starts = _spent(before, _threads(sup.pid)), file.stat().st_size - starts
        figures["baseline_ms"] = cpu / max(starts, 1) * 1000
        figures["baseline_per_s"] = starts / (seconds * 3)
    return figures


def rows(setup: Setup, quick: bool) -> list[tuple[str, str, str, str]]:
    """Every figure of the issue's table, with its baseline, as table rows."""
    began = start(setup, 2 if quick else 5)
    rest = idle(setup, 5.0 if quick else 30.0)
    waited = grace(setup, 4.0 if quick else 10.0)
    restarted = restart(setup, 3.0 if quick else 10.0)
    sup = "supervisord" if setup.supervisord is not None else setup.baseline_note

    def ratio(value: float, base: float) -> str:
        return f" ({value / base:.2f}x)" if math.isfinite(base) and base > 0 else ""

    return [
        (
            f"worker started after launch (blender --version takes {SLOW_CHECK:g} s)",
            f"median {began['agent_s']:.3f} s, max {began['agent_max_s']:.3f} s"
            + ratio(began["agent_s"], began["baseline_s"]),
            f"{sup} {began['baseline_s']:.3f} s",
            "<= 0.3 s",
        ),
        (
            "idle CPU, quiet worker, Scheduled Events on",
            f"{rest['agent_pct']:.4f} % of a core" + ratio(rest["agent_pct"], rest["baseline_pct"]),
            f"{sup} {rest['baseline_pct']:.4f} %",
            "<= 0.03 %",
        ),
        (
            "  wake-ups (context switches, every thread)",
            f"{rest['agent_wakeups']:.2f}/s"
            + ratio(rest["agent_wakeups"], rest["baseline_wakeups"]),
            f"{sup} {rest['baseline_wakeups']:.2f}/s",
            "<= 1.1/s",
        ),
        (
            "CPU while waiting out the stop grace (a leftover)",
            f"{waited['agent_pct']:.3f} % of a core"
            + ratio(waited["agent_pct"], waited["baseline_pct"]),
            f"{sup} {waited['baseline_pct']:.3f} % (its program)",
            "<= 2 %",
        ),
        (
            "CPU per restart (worker exits asking for one)",
            f"{restarted['agent_ms']:.2f} ms"
            + ratio(restarted["agent_ms"], restarted["baseline_ms"]),
            f"{sup} {restarted['baseline_ms']:.2f} ms",
            "<= 2.5 ms",
        ),
        (
            "  restarts per second",
            f"{restarted['agent_per_s']:.1f}/s",
            f"{sup} {restarted['baseline_per_s']:.1f}/s",
            "",
        ),
    ]
