"""The supervisor's parts in-process: log pump, lock, worker command, stop requests."""

from __future__ import annotations

import os
import re
import select
import signal
import threading
from pathlib import Path
from typing import Optional

import pytest

from node_agent import bootstrap
from node_agent.bootstrap.survey import survey
from node_agent.config.settings import load_settings
from node_agent.node.flavour import Flavour
from node_agent.runtime.lock import AlreadyRunning, NodeLock
from node_agent.runtime.logpump import CHUNK, Pump, utc_stamp
from node_agent.runtime.policy import RestartPolicy
from node_agent.runtime.state import AgentState, Phase, StateKeeper
from node_agent.runtime.supervise import Supervisor
from node_agent.runtime.worker import WorkerSpec, worker_spec
from tests.helpers import wait_until
from tests.nodes import make_node


def _pump(data: bytes, stamp: bool = False) -> bytes:
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    pump = Pump(source_r, sink_w, "test", utc_stamp if stamp else None).start()
    received = bytearray()
    reader = threading.Thread(target=lambda: _drain(sink_r, received))
    reader.start()
    view = memoryview(data)
    while view:
        view = view[os.write(source_w, view[: CHUNK // 3]) :]
    os.close(source_w)
    assert pump.join(30)
    os.close(sink_w)
    reader.join(30)
    os.close(sink_r)
    return bytes(received)


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        into.extend(chunk)


def test_pump_is_byte_exact_and_terminates_the_last_line() -> None:
    data = b"a\xff\xfe\n" * 1000 + b"\x00tail"
    assert _pump(data) == data + b"\n"
    assert _pump(b"") == b""
    assert _pump(b"done\n") == b"done\n"


def test_pump_timestamps_every_line_once() -> None:
    out = _pump(b"one\ntwo\n" + b"x" * (3 * CHUNK) + b"\nlast", stamp=True).decode()
    lines = out.split("\n")
    assert lines[-1] == ""
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    assert all(stamp.match(line) for line in lines[:-1])
    assert [stamp.sub("", line, count=1) for line in lines[:-1]] == [
        "one",
        "two",
        "x" * (3 * CHUNK),
        "last",
    ]


def test_pump_keeps_draining_when_its_output_is_gone() -> None:
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    os.close(sink_r)  # nobody will ever read our output
    pump = Pump(source_r, sink_w, "test").start()
    os.write(source_w, b"lost\n" * 1000)
    os.close(source_w)
    assert pump.join(30)
    assert isinstance(pump.error, BrokenPipeError)
    os.close(sink_w)


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    first = NodeLock(str(tmp_path / "agent.lock"))
    first.acquire()
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        NodeLock(str(tmp_path / "agent.lock")).acquire()
    first.release()
    second = NodeLock(str(tmp_path / "agent.lock"))
    second.acquire()
    second.release()


def test_worker_spec_per_flavour(tmp_path: Path) -> None:
    for fixture, flavour in (("newer_spot", "v3"), ("seed", "v2")):
        node = make_node(tmp_path / fixture, fixture)
        environ = {**node.environ, "FLAMENCO_REGISTRATION_SECRET": "s3cret"}
        settings = load_settings(environ, {}, None)
        plan = bootstrap.plan(node.env, settings, survey(node.env, settings))
        spec = worker_spec(plan, settings, environ)
        env = dict(spec.env)
        shared = str(node.shared)
        assert env["PATH"].split(":")[0] == shared
        assert env["PATH"].split(":").count(shared) == 1
        assert "FLAMENCO_REGISTRATION_SECRET" not in env
        assert spec.cwd == plan.layout.worker_dir
        if flavour == "v3":
            assert spec.argv[1:] == ("-restart-exit-code", "75")
            assert env["FLAMENCO_HOME"] == plan.layout.worker_home
            assert env["FLAMENCO_WORKER_NAME"] == plan.worker_name
            assert env["NO_COLOR"] == "1"  # no colour escapes in stdout.txt
            with_args = load_settings({**environ, "FLAMENCO_WORKER_ARGS": "-debug"}, {}, None)
            assert worker_spec(plan, with_args, environ).argv[1:] == (
                "-restart-exit-code",
                "75",
                "-debug",
            )
        else:
            assert spec.argv[1:] == ()
            assert env["HOME"] == plan.layout.worker_home


def test_pump_lives_through_a_full_disk_and_says_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (every write to it fails with ENOSPC)")
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    full = os.open("/dev/full", os.O_WRONLY)
    sink = os.dup(full)  # the pump's output: a full disk, for now
    pump = Pump(source_r, sink, "stdout").start()
    os.write(source_w, b"lost line\n")
    wait_until(lambda: pump.lost == 10, what="the lost line")
    os.dup2(sink_w, sink)  # space is back
    os.write(source_w, b"kept line\n")
    os.close(source_w)
    assert pump.join(30)
    assert os.read(sink_r, 100) == b"kept line\n"
    assert pump.error is None and pump.lost == 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "cannot write the worker's stdout (No space left on device): dropping its output "
        "until writing works again",
        "writing the worker's stdout works again; 10 bytes of it could not be written "
        "(No space left on device) and are lost",
    ]
    for fd in (sink_r, sink_w, full, sink):
        os.close(fd)


def test_pump_waits_on_an_output_that_is_non_blocking() -> None:
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    os.set_blocking(sink_w, False)  # as a reader sharing our stdout might leave it
    pump = Pump(source_r, sink_w, "test").start()
    data = b"0123456789abcde\n" * (1 << 16)  # 1 MiB: many times a pipe's buffer
    received = bytearray()
    reader = threading.Thread(target=lambda: _drain(sink_r, received))
    os.write(source_w, data[: 1 << 16])
    wait_until(lambda: not pump.join(0.01) and _pipe_full(sink_w), what="a full pipe")
    reader.start()
    view = memoryview(data)[1 << 16 :]
    while view:
        view = view[os.write(source_w, view) :]
    os.close(source_w)
    assert pump.join(30)
    os.close(sink_w)
    reader.join(30)
    os.close(sink_r)
    assert bytes(received) == data and pump.error is None and pump.lost == 0


def _pipe_full(fd: int) -> bool:
    return not select.select([], [fd], [], 0)[1]


class _StopDuringStop(Supervisor):
    """A supervisor that a real SIGTERM interrupts in the middle of a stop request
    (the first time ``interrupt`` is set), as a second stop signal can."""

    interrupt = False
    _reason: Optional[str] = None

    @property
    def stop_reason(self) -> Optional[str]:
        if self.interrupt:
            self.interrupt = False
            os.kill(os.getpid(), signal.SIGTERM)
            # Python runs the handler at its next check, on this thread: right here.
            wait_until(lambda: self._reason is not None, 20, "the SIGTERM handled")
        return self._reason

    @stop_reason.setter
    def stop_reason(self, reason: Optional[str]) -> None:
        self._reason = reason


def _deadlocked(_signum: int, _frame: object) -> None:
    raise AssertionError("a stop signal during a stop request deadlocked the agent")


def test_a_stop_signal_during_a_stop_request_is_honoured(tmp_path: Path) -> None:
    settings = load_settings({"FLAMENCO_MANAGER_URL": "http://127.0.0.1:9/"}, {}, None)
    policy = RestartPolicy(Flavour.V3, 75, False, 1.0, 1.0, 1.0, 1.0)
    first = AgentState(os.getpid(), 0.0, Phase.STARTING, 0.0, "v3", "w", "w", "d", "c")
    keeper = StateKeeper(str(tmp_path / "state.json"), first)
    supervisor = _StopDuringStop(WorkerSpec(("true",), str(tmp_path), ()), policy, settings, keeper)
    previous = signal.signal(signal.SIGTERM, supervisor._on_signal)
    # A deadlock in the handler is broken by this alarm (lock waits give way to signals).
    previous_alarm = signal.signal(signal.SIGALRM, _deadlocked)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        supervisor.interrupt = True
        supervisor.request_stop("received SIGHUP")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous)
    woken = select.select([supervisor._wake_r], [], [], 0)[0]
    os.close(supervisor._wake_r)
    os.close(supervisor._wake_w)
    assert supervisor.stop_reason == "received SIGTERM"  # the first to be noted stands
    assert woken  # the main loop is woken
