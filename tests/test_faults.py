"""Supervision through faults (issue 12): a bad or planted state file, with real
processes and real files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import psutil
import pytest

from node_agent.cli import main
from node_agent.common.errors import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNHEALTHY,
    InvalidInput,
)
from node_agent.common.redact import redact_urls
from node_agent.config.settings import load_settings
from node_agent.manager.transport import PROBE_TIMEOUT
from node_agent.runtime import proctree
from node_agent.sim.node import rebase
from node_agent.sim.standins.manager import FakeManager
from tests.agent import Agent, alive, worker_node
from tests.helpers import STAMP, needs_mount_namespace, wait_until
from tests.nodes import CLOSED_LOOPBACK, TestNode

Start = Callable[..., Agent]


def node_agent(
    node: TestNode, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a node-agent command on ``node`` (its environment only), after ``prefix``."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "node_agent", *args],
        capture_output=True,
        text=True,
        env={**node.environ, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def _plant_state(node: TestNode, document: object) -> Path:
    path = node.shared / ".node-agent" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _left_behind(**fields: object) -> dict[str, object]:
    """A valid state document, as an agent that was killed leaves it, with ``fields``."""
    return {
        "schema": 1,
        "agent_pid": 999999,
        "agent_create_time": 1.0,
        "phase": "running",
        "started_at": 1.0,
        "flavour": "v3",
        "worker_name": "w",
        "worker_executable": "/x",
        "worker_dir": "/w",
        "config_path": "/w/c",
        **fields,
    }


def test_a_state_file_of_the_wrong_shape_is_reported_and_run_carries_on(
    tmp_path: Path, run_agent: Start
) -> None:
    node = worker_node(tmp_path / "node")
    _plant_state(node, {"schema": 1, "agent_pid": "abc", "started_at": "yesterday"})
    status = node_agent(node, "status")
    assert status.returncode == EXIT_NOT_RUNNING and "Traceback" not in status.stderr
    assert "does not hold a valid state: " in status.stdout
    assert 'agent_pid: expected a process id, found "abc"' in status.stdout
    assert "has not run on this node" not in status.stdout
    as_json = json.loads(node_agent(node, "status", "--json").stdout)
    assert "started_at: expected a number of seconds" in as_json["state_problem"]
    doctor = node_agent(node, "doctor")
    assert doctor.returncode == EXIT_UNHEALTHY and "Traceback" not in doctor.stderr
    assert "WARNING  agent" in doctor.stdout and "does not hold a valid state" in doctor.stdout

    agent = run_agent("count,wait", node=node)
    state = agent.wait_running()
    assert state["agent_pid"] == agent.process.pid
    assert b"WARNING: ignoring the state file" in agent.stderr
    assert b"Traceback" not in agent.stderr


def test_a_planted_state_never_gets_an_unrelated_process_killed(
    tmp_path: Path, run_agent: Start
) -> None:
    node = worker_node(tmp_path / "node")
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        _plant_state(
            node,
            _left_behind(
                agent_pid=bystander.pid,
                agent_create_time=psutil.Process(bystander.pid).create_time(),
                # Right pid and start time of a process that is not a worker.
                worker_pid=bystander.pid,
                worker_create_time=psutil.Process(bystander.pid).create_time(),
                worker_token="0123456789abcdef0123456789abcdef",
            ),
        )
        agent = run_agent("count,wait", node=node, NODE_AGENT_STOP_GRACE="1")
        agent.wait_running()
        assert alive(bystander.pid)
        assert b"left by a previous agent" not in agent.stderr
    finally:
        bystander.kill()
        bystander.wait()


# ---- a full disk: a small real tmpfs in a private mount namespace -------------------


def on_tmpfs(mount_at: Path, options: str, then: str = "") -> tuple[str, ...]:
    """A command prefix: a private mount namespace with a tmpfs (``options``) at
    ``mount_at``, the shell commands ``then`` run in it, then the command. Skips the
    test where that is not permitted."""
    needs_mount_namespace()
    script = f'mount -t tmpfs -o {options} tmpfs "$0" || exit 97\n{then}\nexec "$@"'
    return ("unshare", "-m", "--propagation", "private", "sh", "-c", script, str(mount_at))


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system is full; the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError) as full:
        while True:
            handle.write(b"\0" * 65536)
    assert full.value.errno == errno.ENOSPC
    return filler


def test_a_full_disk_never_stops_supervision(tmp_path: Path, run_agent: Start) -> None:
    node = worker_node(tmp_path / "node")
    agent = run_agent("count,wait", node=node, wrapper=on_tmpfs(node.shared, "size=4m"))
    agent.view = f"/proc/{agent.process.pid}/root"
    first = agent.wait_running()["worker_pid"]
    filler = fill(Path(agent.view + str(node.shared)))
    # The worker dies while the disk is full: its exit and the next start cannot be
    # written to the state file, and supervision goes on regardless.
    psutil.Process(first).kill()
    wait_until(lambda: len(agent.runs()) == 2, what="the restart on a full disk")
    assert agent.process.poll() is None
    assert agent.state()["worker_pid"] == first  # old news while the disk is full
    assert agent.stderr.count(b"cannot write the state file") == 1
    filler.unlink()  # space is back: the state tells the truth again
    state = agent.wait_running(starts=2)
    assert state["restarts"] == 1 and state["last_exit_code"] == -signal.SIGKILL
    # Logged just after the write that the state file shows: wait for the line.
    wait_until(lambda: b"is written again" in agent.stderr, what="the recovery logged")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert b"Traceback" not in agent.stderr


def test_no_room_for_the_lock_file_or_the_state_is_no_reason_not_to_run(
    tmp_path: Path, run_agent: Start
) -> None:
    node = worker_node(tmp_path / "node")
    # Bootstrapped before, then every inode used up: no new file can be created.
    then = (
        f'"{sys.executable}" -m node_agent bootstrap >/dev/null || exit 98\n'
        'i=0; while touch "$0/.inode-$i" 2>/dev/null; do i=$((i+1)); done'
    )
    agent = run_agent(
        "count,wait", node=node, wrapper=on_tmpfs(node.shared, "size=1m,nr_inodes=64", then)
    )
    agent.view = f"/proc/{agent.process.pid}/root"
    wait_until(agent.runs, what="the worker's start")
    wait_until(lambda: b"cannot write the state file" in agent.stderr)
    assert b"cannot create the node's lock" in agent.stderr and not agent.state_path.exists()
    for filler in Path(agent.view + str(node.shared)).glob(".inode-*"):
        filler.unlink()
    assert agent.wait_running()["worker_pid"] == agent.runs()[0]
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert b"Traceback" not in agent.stderr


def test_the_worker_log_lives_through_a_full_disk(tmp_path: Path, run_agent: Start) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    # stdout.txt alone on a small disk; the agent's own messages go elsewhere.
    prefix = (*on_tmpfs(disk, "size=1m"), "sh", "-c", 'exec "$@" >"$0"', f"{disk}/stdout.txt")
    page = os.sysconf("SC_PAGE_SIZE")  # a full page: the next byte needs a new one
    agent = run_agent(f"count,usr1-lines:line,out:{'x' * (page - 1)},wait", wrapper=prefix)
    agent.view = f"/proc/{agent.process.pid}/root"
    stdout = Path(agent.view + str(disk / "stdout.txt"))
    worker = agent.wait_running()["worker_pid"]
    wait_until(lambda: stdout.stat().st_size == page, what="the first page")
    filler = fill(Path(agent.view + str(disk)))
    os.kill(worker, signal.SIGUSR1)  # "line 1": the disk is full
    wait_until(lambda: b"cannot write the worker's stdout (No space left" in agent.stderr)
    filler.unlink()
    os.kill(worker, signal.SIGUSR1)  # "line 2": space is back
    wait_until(lambda: stdout.read_bytes().endswith(b"line 2\n"), what="line 2")
    assert stdout.read_bytes() == b"x" * (page - 1) + b"\nline 2\n"
    # Said once the write that worked is done: a moment after line 2 is in the file.
    again = (
        b"writing the worker's stdout works again; 7 bytes of it could not be written "
        b"(No space left on device) and are lost"
    )
    wait_until(lambda: again in agent.stderr, what="the log of the recovery")


# ---- secrets in error messages ---------------------------------------------------

NEVER = "S3cret-never-print-me"


def test_a_yaml_error_gives_line_and_column_never_the_line_itself(tmp_path: Path) -> None:
    node = worker_node(tmp_path / "node")
    config = tmp_path / "node-agent.yaml"
    config.write_text(f'manager_url: http://127.0.0.1:9/\nregistration_secret: "{NEVER}\n')
    node.environ["NODE_AGENT_CONFIG"] = str(config)
    for command, code in (("bootstrap", 3), ("run", 3), ("doctor", 6)):
        result = node_agent(node, command)
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        assert "is not valid YAML: found unexpected end of stream at line 3, column 1" in output
        assert NEVER not in output and "Traceback" not in output


@pytest.mark.parametrize("password", [NEVER, f"p@{NEVER}@x"])
def test_a_manager_url_password_is_never_printed(
    tmp_path: Path, run_agent: Start, password: str
) -> None:
    node = worker_node(tmp_path / "node")
    url = f"http://render:{password}@127.0.0.1:9/"
    node.environ["FLAMENCO_MANAGER_URL"] = url
    doctor = node_agent(node, "doctor", "--json")
    assert NEVER not in doctor.stdout + doctor.stderr
    found = {row["check"]: row["found"] for row in json.loads(doctor.stdout)["checks"]}
    assert found["settings"].startswith("Manager http://render:<redacted>@127.0.0.1:9/")
    assert found["manager"].startswith("http://render:<redacted>@127.0.0.1:9/: ")
    bootstrap = node_agent(node, "bootstrap", "--dry-run")
    assert bootstrap.returncode == 0 and NEVER not in bootstrap.stdout + bootstrap.stderr
    agent = run_agent("count,wait", node=node, FLAMENCO_MANAGER_URL=url)
    wait_until(lambda: b": attempt 1 after" in agent.stderr, what="a Manager attempt")
    assert b"Manager http://render:<redacted>@127.0.0.1:9/: attempt 1" in agent.stderr
    for command in (("status", "--json"), ("env",)):
        result = node_agent(node, *command)
        assert NEVER not in result.stdout + result.stderr, command
    assert NEVER.encode() not in agent.stderr + agent.stdout


def test_a_password_that_makes_no_valid_url_is_never_printed(tmp_path: Path) -> None:
    node = worker_node(tmp_path / "node")
    node.environ["FLAMENCO_MANAGER_URL"] = f"http://render:p@ss /{NEVER}@127.0.0.1:9/"
    result = node_agent(node, "run")
    assert result.returncode == EXIT_INVALID
    assert "manager_url='http://render:<redacted>@127.0.0.1:9/' (from environment" in (
        result.stderr
    )
    assert NEVER not in result.stdout + result.stderr


def test_url_passwords_are_redacted_wherever_they_appear() -> None:
    text = (
        "Manager https://render:pa%24s@m.example:8443/api and http://10.0.0.4:8080/, "
        "'http://u:p@h/' and http://token@h/, http://admin:p@ssw0rdXYZ@127.0.0.1:9/ "
        "http://me@corp.example:pa@ss@h/?to=a@b http://h:8080/path@x"
    )
    assert redact_urls(text) == (
        "Manager https://render:<redacted>@m.example:8443/api and http://10.0.0.4:8080/, "
        "'http://u:<redacted>@h/' and http://token@h/, http://admin:<redacted>@127.0.0.1:9/ "
        "http://me@corp.example:<redacted>@h/?to=a@b http://h:8080/path@x"
    )


def test_a_bad_manager_url_is_invalid_input_at_start(tmp_path: Path) -> None:
    node = worker_node(tmp_path / "node")
    for url in ("http://127.0.0.1:99999/", "http://127.0.0.1:abc/", "http://my manager:8080/"):
        node.environ["FLAMENCO_MANAGER_URL"] = url
        result = node_agent(node, "run")
        assert result.returncode == EXIT_INVALID, result.stderr
        assert f"manager_url={url!r} (from environment FLAMENCO_MANAGER_URL)" in result.stderr


# ---- a stop while waiting for a Manager behind a dropping firewall ---------------


class Blackhole:
    """A TCP server on 127.0.0.1 that answers its first connection with HTTP 503
    and then accepts connections and never says a word (a Manager behind a
    firewall that drops packets: every probe hangs for its whole timeout)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                if not self.held:
                    connection.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


def test_a_stop_is_at_once_even_while_a_manager_probe_hangs(
    tmp_path: Path, run_agent: Start
) -> None:
    blackhole = Blackhole()
    try:
        agent = run_agent("count,wait", FLAMENCO_MANAGER_URL=blackhole.url)
        # The second connection is a probe that will get no answer at all.
        wait_until(lambda: len(blackhole.held) >= 2, what="a hanging probe")
        wait_until(lambda: agent.state().get("phase") == "waiting-for-manager")
        agent.signal(signal.SIGTERM)
        assert agent.wait(PROBE_TIMEOUT / 2) == EXIT_OK  # long before the probe times out
    finally:
        blackhole.close()
    assert re.search(rb"INFO: Manager http://\S+: stopped waiting after ", agent.stderr)
    assert b"supervision ends before the worker starts: received SIGTERM" in agent.stderr
    assert agent.runs() == [] and agent.state()["phase"] == "stopped"


def test_the_start_up_report_checks_what_the_agent_runs_with(run_agent: Start) -> None:
    manager = FakeManager().start()
    # The environment names a closed port; the command line, which wins, the Manager.
    agent = run_agent(
        "count,wait",
        manager=manager,
        args=("--manager-url", manager.url),
        FLAMENCO_MANAGER_URL=CLOSED_LOOPBACK,
    )
    agent.wait_running()
    # Beside the worker: the report comes when its checks are done.
    wait_until(lambda: b"INFO:   OK       agent " in agent.stderr, what="the report")
    report = agent.stderr.decode()
    assert re.search(f"INFO:   OK +settings +Manager {re.escape(manager.url)},", report)
    assert re.search("INFO:   OK +manager +Flamenco Manager ", report)
    assert re.search(r"INFO:   OK +agent +running, phase (starting|running), 0 restart", report)


# ---- bad input never gives a traceback ---------------------------------------------


def test_a_path_too_long_to_exist_gives_no_traceback(tmp_path: Path) -> None:
    node = worker_node(tmp_path / "node")
    long_root = str(node.root / ("x" * 300))  # one component over NAME_MAX
    node.environ.update(rebase(node.environ, str(node.root), long_root))
    for command in ("env", "status", "doctor", "bootstrap", "run"):
        result = node_agent(node, command)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert result.returncode in (EXIT_OK, EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_UNHEALTHY)
    assert "File name too long" in node_agent(node, "run").stderr


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_env_files_and_settings_files_that_are_no_such_thing(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / kind
    if kind == "device":
        path = Path("/dev/zero")  # endless: read whole, it would exhaust the memory
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes: read, it would hang forever
    else:
        path.write_bytes(b"# a comment line\n" * 200_000)  # 3.4 MB
    why = "is larger than 1024 KiB" if kind == "huge" else "is not a regular file"
    assert main(["env", "--env-file", str(path)]) == EXIT_INVALID
    assert f"{path}: {why}" in capsys.readouterr().err
    with pytest.raises(InvalidInput) as caught:
        load_settings({"NODE_AGENT_CONFIG": str(path)}, {}, None)
    assert f"{path}: {why}" in caught.value.render()


@pytest.mark.parametrize("planted", ["symlink", "directory"])
def test_something_planted_at_the_lock_path_is_named(
    tmp_path: Path, planted: str, run_agent: Start
) -> None:
    node = worker_node(tmp_path / "node")
    lock = node.shared / ".node-agent" / "agent.lock"
    lock.parent.mkdir(parents=True)
    if planted == "symlink":
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        lock.mkdir()
    agent = run_agent("count,wait", node=node)
    assert agent.wait() == EXIT_FAILURE
    assert (
        f"cannot take the node's lock {lock}: it is a {planted}, not node-agent's lock "
        "file; remove it".encode()
        in agent.stderr
    )
    assert b"Traceback" not in agent.stderr and agent.runs() == []
    assert not (tmp_path / "elsewhere").exists()


# ---- signals: from the first moment, and the ones that mean nothing ---------------


def test_a_stop_signal_in_the_first_moments_of_run_is_honoured(
    run_agent: Start, tmp_path: Path
) -> None:
    # Before supervision, the agent stops a worker a killed agent left behind: one
    # that ignores SIGTERM holds it there for the grace (the report no longer does).
    node = worker_node(tmp_path / "node")
    token = "0123456789abcdef0123456789abcdef"
    stale = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
        env={"PATH": "/usr/bin:/bin", proctree.TOKEN_VARIABLE: token},
    )
    try:
        _plant_state(node, _left_behind(worker_pid=stale.pid, worker_token=token))
        agent = run_agent("count,wait", node=node, NODE_AGENT_STOP_GRACE="1")
        wait_until(lambda: b"a worker left by a previous agent" in agent.stderr, what="the stop")
        agent.signal(signal.SIGTERM)
        assert agent.wait() == EXIT_OK
        assert stale.wait(10) == -signal.SIGKILL
    finally:
        stale.kill()
        stale.wait()
    assert b"supervision ends before the worker starts: received SIGTERM" in agent.stderr
    state = agent.state()
    assert state["phase"] == "stopped" and state["stop_reason"] == "received SIGTERM"
    assert agent.runs() == []


def test_signals_that_mean_nothing_to_the_agent_are_ignored(run_agent: Start) -> None:
    agent = run_agent("count,wait")
    worker = agent.wait_running()["worker_pid"]
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        agent.signal(sig)
        wait_until(lambda sig=sig: f"INFO: ignoring {sig.name}".encode() in agent.stderr)
    assert agent.process.poll() is None and alive(worker)
    assert agent.state()["phase"] == "running"


def test_a_read_only_shared_dir_is_a_node_fault_named_as_such(tmp_path: Path) -> None:
    node = worker_node(tmp_path / "node")
    # A disk remounted read-only after errors.
    read_only = on_tmpfs(node.shared, "size=1m", 'mount -o remount,ro "$0"')
    run = node_agent(node, "run", prefix=read_only)
    assert run.returncode == EXIT_FAILURE, run.stderr
    assert f"ERROR: the shared dir {node.shared}: is on a read-only file system" in run.stderr
    doctor = node_agent(node, "doctor", prefix=read_only)
    assert re.search(
        f"FAILED +shared dir +{re.escape(str(node.shared))}: is on a read-only file system",
        doctor.stdout,
    )
    assert "fix: reboot or reimage the node" in doctor.stdout
    assert re.search("OK +shared dir +.* is writable", node_agent(node, "doctor").stdout)


def test_hundreds_of_leftovers_make_one_short_line(run_agent: Start) -> None:
    agent = run_agent("count,later-runs-wait:1,children:40,exit:3", NODE_AGENT_STOP_GRACE="1")
    agent.wait_running(starts=2)
    (line,) = [line for line in agent.stderr.splitlines() if b"left by the worker" in line]
    assert re.fullmatch(
        STAMP + rb" node-agent: WARNING: stopping 40 process\(es\) left by the worker: "
        rb"(\d+, ){9}\d+ and 30 more",
        line,
    )
