"""The supervisor with real processes: the real agent, a stand-in worker, real
signals. Every wait polls with a deadline."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import psutil
import pytest

from node_agent.common.errors import (
    EXIT_ALREADY_RUNNING,
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNHEALTHY,
)
from node_agent.doctor import Context, Status, node_checks
from node_agent.sim.standins.imds import FakeImds
from node_agent.sim.standins.manager import FakeManager
from tests.agent import Agent, alive, worker_node
from tests.helpers import wait_until
from tests.nodes import CLOSED_LOOPBACK
from tests.workers.standin import MIXED_STDERR, MIXED_STDOUT

Start = Callable[..., Agent]


def _status(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        **{k: v for k, v in agent.node.environ.items() if k.startswith("AZ_BATCH_")},
    }
    return subprocess.run(
        [sys.executable, "-m", "node_agent", "status", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_output_is_forwarded_byte_exact(run_agent: Start) -> None:
    agent = run_agent("count,mixed,exit:0")
    assert agent.wait() == EXIT_OK
    # Invalid UTF-8, 100k lines, a 10 MB line, and the unterminated last line
    # (terminated by the agent) all arrive unchanged, in order.
    assert agent.stdout == MIXED_STDOUT + b"\n"
    assert MIXED_STDERR + b"\n" in agent.stderr
    assert b"node-agent: INFO: worker started" in agent.stderr


def test_output_printed_after_the_worker_exited_is_kept(run_agent: Start) -> None:
    agent = run_agent("count,late-print,out:worker line,exit:0")
    assert agent.wait() == EXIT_OK
    # The grandchild printed when the agent stopped it, after the worker had exited.
    assert agent.stdout == b"worker line\nlate line\n"


def test_partial_line_is_not_glued_to_the_next_run(run_agent: Start) -> None:
    agent = run_agent("count,run-tag,exit-first:1:75,out:,wait")
    agent.wait_running(starts=2)
    wait_until(lambda: agent.stdout.endswith(b"run 2\n"))
    assert agent.stdout == b"run 1\nrun 2\n"


def test_timestamps(run_agent: Start) -> None:
    agent = run_agent("count,out:hello,partial:bye,exit:0", args=("--timestamps",))
    assert agent.wait() == EXIT_OK
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    assert re.fullmatch(f"{stamp}hello\n{stamp}bye\n", agent.stdout.decode()), agent.stdout


def test_v3_clean_exit_ends_supervision(run_agent: Start) -> None:
    agent = run_agent("count,exit:0")
    assert agent.wait() == EXIT_OK
    assert len(agent.runs()) == 1
    state = agent.state()
    assert state["phase"] == "stopped" and state["last_exit_code"] == 0
    assert state["stop_reason"] == "the Manager asked the worker to shut down"


def test_v2_clean_exit_restarts(tmp_path: Path, run_agent: Start) -> None:
    node = worker_node(tmp_path / "node", "seed")
    agent = run_agent("count,exit-first:1:0,wait", node=node)
    state = agent.wait_running(starts=2)
    assert state["flavour"] == "v2" and state["restarts"] == 1
    assert "v2 worker also gives after failures" in state["last_exit_reason"]


def test_restart_exit_code_restarts_at_once(run_agent: Start) -> None:
    agent = run_agent("count,exit-first:1:75,wait", NODE_AGENT_MIN_UPTIME="0.001")
    state = agent.wait_running(starts=2)
    assert state["restarts"] == 1 and state["consecutive_failures"] == 0
    assert state["last_exit_reason"] == "the worker asked to be restarted"
    assert b"restart now" in agent.stderr and b"restarting the worker in" not in agent.stderr


def test_crash_loop_backs_off_and_is_reported(run_agent: Start) -> None:
    agent = run_agent("count,exit:3")
    wait_until(lambda: len(agent.runs()) >= 7, what="7 starts")
    state = wait_until(lambda: agent.state().get("crash_loop") and agent.state())
    assert state["consecutive_failures"] >= 5 and state["last_exit_code"] == 3
    delays = [float(d) for d in re.findall(rb"in (\d+\.\d) s", agent.stderr)]
    assert delays and max(delays) <= 0.4  # the cap
    assert b"node-agent: ERROR: crash loop: the worker failed" in agent.stderr
    status = _status(agent)
    assert status.returncode == EXIT_OK and "CRASH LOOP" in status.stdout
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK


def test_a_restart_storm_is_paced_and_reported_as_a_crash_loop(run_agent: Start) -> None:
    # Exits with the restart exit code right after every start (min_uptime: 10 s).
    agent = run_agent("count,exit:75")
    wait_until(lambda: b"node-agent: ERROR: crash loop: the worker failed" in agent.stderr)
    state = agent.state()
    assert state["crash_loop"] and state["consecutive_failures"] >= 5
    assert state["last_exit_code"] == 75 and "paced like a failure" in state["last_exit_reason"]
    assert b"restart now" not in agent.stderr
    assert "CRASH LOOP" in _status(agent).stdout
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK


def _tree_pids(agent: Agent) -> list[int]:
    work = agent.work
    return [agent.runs()[-1], *(int((work / n).read_text()) for n in ("child", "daemon"))]


def test_max_restarts_counts_failures_in_a_row_only(run_agent: Start) -> None:
    # Two requested restarts first (not failures), then failures until it gives up.
    agent = run_agent(
        "count,exit-first:2:75,exit:3", NODE_AGENT_MAX_RESTARTS="2", NODE_AGENT_MIN_UPTIME="0.001"
    )
    assert agent.wait() == EXIT_FAILURE
    assert len(agent.runs()) == 2 + 3  # the failures: the first run and 2 restarts
    assert b"gave up after 2 failed restarts in a row (max_restarts)" in agent.stderr
    state = agent.state()
    assert state["consecutive_failures"] == 3
    # The state tells the end: stopped, why, and the restarts that really happened.
    assert state["phase"] == "stopped" and state["gave_up"] is True
    assert state["stop_reason"].startswith("gave up after 2 failed restarts in a row")
    assert state["restarts"] == len(agent.runs()) - 1
    (row,) = node_checks.check_agent(Context.from_environ(agent.node.environ))
    assert row.status is Status.FAILED and "gave up after 2 failed restarts" in row.found
    # And so the doctor's verdict: unhealthy (the Manager and IMDS are unreachable
    # here too; the agent's row is what matters).
    doctor = subprocess.run(
        [sys.executable, "-m", "node_agent", "doctor", "--json"],
        env={**agent.node.environ, "NODE_AGENT_IMDS_URL": CLOSED_LOOPBACK},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert doctor.returncode == EXIT_UNHEALTHY
    [agent_row] = [r for r in json.loads(doctor.stdout)["checks"] if r["check"] == "agent"]
    assert agent_row["status"] == "failed"


def test_sigterm_stops_the_whole_tree(run_agent: Start) -> None:
    agent = run_agent("count,child-ignoring-term,daemon,term:1,wait")
    agent.wait_running()
    wait_until(lambda: (agent.work / "child").exists() and (agent.work / "daemon").exists())
    pids = _tree_pids(agent)
    assert all(alive(pid) for pid in pids)
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert not [pid for pid in pids if alive(pid)]
    state = agent.state()
    assert state["phase"] == "stopped" and state["stop_reason"] == "received SIGTERM"
    assert state["last_exit_code"] == 1
    # The worker obeyed SIGTERM; only its two leftovers needed stopping.
    assert b"did not stop within" not in agent.stderr
    assert b"stopping 2 process(es) left by the worker" in agent.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGQUIT])
def test_other_stop_signals(sig: signal.Signals, run_agent: Start) -> None:
    agent = run_agent("count,wait")
    worker = agent.wait_running()["worker_pid"]
    agent.signal(sig)
    assert agent.wait() == EXIT_OK
    assert not alive(worker)
    assert agent.state()["stop_reason"] == f"received {sig.name}"


def test_worker_ignoring_sigterm_is_killed_at_the_grace_period(run_agent: Start) -> None:
    agent = run_agent("count,ignore-term,child-ignoring-term,wait", NODE_AGENT_STOP_GRACE="1")
    worker = agent.wait_running()["worker_pid"]
    wait_until((agent.work / "child").exists)
    child = int((agent.work / "child").read_text())
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert not alive(worker) and not alive(child)
    assert agent.state()["last_exit_code"] == -signal.SIGKILL
    assert b"did not stop within 1 s: SIGKILL to its whole tree" in agent.stderr


def test_leftovers_are_stopped_and_reaped_before_the_next_start(run_agent: Start) -> None:
    # Only the first run leaves a daemon and a SIGTERM-ignoring child behind.
    agent = run_agent(
        "count,later-runs-wait:1,daemon,child-ignoring-term,exit:3", NODE_AGENT_STOP_GRACE="1"
    )
    state = agent.wait_running(starts=2)
    assert b"stopping 2 process(es) left by the worker" in agent.stderr
    first_tree = [
        agent.runs()[0],
        *(int((agent.work / n).read_text()) for n in ("daemon", "child")),
    ]
    # Gone and reaped before the second start: not even a zombie is left of them.
    assert not [pid for pid in first_tree if psutil.pid_exists(pid)]
    agent_process = psutil.Process(state["agent_pid"])
    assert [
        c for c in agent_process.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE
    ] == []


def test_second_agent_is_refused(tmp_path: Path, run_agent: Start) -> None:
    first = run_agent("count,wait")
    first.wait_running()
    second = run_agent(where=tmp_path / "b", steps="count,wait", node=first.node)
    assert second.wait() == EXIT_ALREADY_RUNNING
    assert b"already supervising the worker on this node" in second.stderr
    assert len(first.runs()) == 1 and first.process.poll() is None


def test_stale_worker_of_a_killed_agent_is_stopped(run_agent: Start) -> None:
    first = run_agent("count,child-ignoring-term,wait", NODE_AGENT_STOP_GRACE="1")
    old_worker = first.wait_running()["worker_pid"]
    wait_until((first.work / "child").exists)
    old_child = int((first.work / "child").read_text())
    first.process.kill()
    first.wait()
    assert alive(old_worker) and alive(old_child)  # orphaned, still rendering
    second = run_agent("count,wait", node=first.node, NODE_AGENT_STOP_GRACE="1")
    second.wait_running(starts=2)
    assert not alive(old_worker) and not alive(old_child)
    assert b"a worker left by a previous agent" in second.stderr


def test_status_in_each_phase(run_agent: Start) -> None:
    agent = run_agent("count,wait")
    before = _status(agent)
    assert before.returncode in (EXIT_OK, EXIT_NOT_RUNNING)
    agent.wait_running()
    running = _status(agent, "--json")
    assert running.returncode == EXIT_OK
    import json

    document = json.loads(running.stdout)
    assert document["phase"] == "running" and document["agent_alive"] is True
    assert document["worker_alive"] is True and document["worker_name"].startswith("spot-")
    text = _status(agent).stdout
    assert "phase running" in text and f"pid {document['worker_pid']}, running" in text
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    stopped = _status(agent)
    assert stopped.returncode == EXIT_NOT_RUNNING
    assert "not running, phase stopped" in stopped.stdout


def test_status_without_any_state(tmp_path: Path) -> None:
    node = worker_node(tmp_path / "node")
    env = {"PATH": "/usr/bin:/bin", **node.environ}
    result = subprocess.run(
        [sys.executable, "-m", "node_agent", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == EXIT_NOT_RUNNING
    assert "has not run on this node" in result.stdout


def test_a_stalled_stdout_reader_does_not_stop_the_agent_from_stopping(
    tmp_path: Path, services: tuple[FakeManager, FakeImds]
) -> None:
    node = worker_node(tmp_path / "node")
    env = {
        **node.environ,
        "FLAMENCO_MANAGER_URL": services[0].url,  # probed before every start
        "PATH": node.environ["PATH"] + ":/usr/bin:/bin",
        "FAKE_WORKER": "count,lines:200000,wait",
        "FAKE_WORKER_DIR": str(tmp_path),
        "NODE_AGENT_STOP_GRACE": "1",
        "NODE_AGENT_WATCH_EVENTS": "false",
    }
    home = node.shared / ".node-agent/worker/home"
    home.mkdir(parents=True)
    (home / "flamenco-worker-credentials.yaml").write_text("worker_id: registered-before\n")
    # Nobody reads the agent's stdout: the pipe fills and stays full.
    agent = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        state_path = node.shared / ".node-agent" / "state.json"
        wait_until(lambda: state_path.exists() and b'"running"' in state_path.read_bytes())
        runs = tmp_path / "runs"
        worker = int(wait_until(lambda: runs.exists() and runs.read_text().strip()))
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == EXIT_OK
        assert not alive(worker)
    finally:
        if agent.poll() is None:
            agent.kill()
        assert agent.stdout is not None
        agent.stdout.close()


def test_worker_that_cannot_start_is_retried(tmp_path: Path, run_agent: Start) -> None:
    node = worker_node(tmp_path / "node")
    (node.package_dir("flamenco-worker") / "flamenco-worker").write_text("#!/nonexistent/sh\n")
    agent = run_agent("count", node=node)
    wait_until(lambda: agent.state().get("restarts", 0) >= 2)
    assert agent.state()["last_exit_code"] == 127
    assert b"cannot start the worker" in agent.stderr
