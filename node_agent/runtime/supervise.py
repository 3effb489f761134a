"""Run the Flamenco Worker for the node's whole life and lose nothing.

One worker at a time, started by ``launch`` (a session of its own, its stdout and
stderr forwarded by ``logpump``). The main thread sleeps in ``select`` on a self-pipe that signals
(``signal.set_wakeup_fd``) and other threads (through ``holds``) write to, so the
agent uses no CPU while the worker runs and reacts at once to SIGCHLD and the
stop signals (``stopsignals``). Restarts follow ``policy``; tenacity's ``Retrying``
does the waiting, through a sleep that a stop request cuts short. A platform event
holds the worker (``holds``): kept stopped, supervision going on, until released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import psutil
import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_never

from node_agent.common.log import get_logger
from node_agent.config.settings import Settings
from node_agent.manager.transport import manager_session
from node_agent.manager.wait import ManagerCheck, ManagerUnavailable, wait_for_manager
from node_agent.runtime import proctree
from node_agent.runtime.holds import Holds
from node_agent.runtime.launch import launch
from node_agent.runtime.policy import Decision, RestartPolicy, Verdict
from node_agent.runtime.state import AgentState, Phase, StateKeeper
from node_agent.runtime.stopsignals import IGNORED_SIGNALS, STOP_SIGNALS
from node_agent.runtime.storage import StorageCheck, wait_for_storage
from node_agent.runtime.worker import WorkerSpec

log = get_logger("supervise")

_POLL = 0.01  # seconds between checks while processes are being stopped
_PUMP_DRAIN = 5.0  # seconds to wait for output still in the pipes after a stop


class WorkerExited(Exception):
    """The worker exited and the policy wants it restarted (tenacity retries this)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class GaveUp(Exception):
    """``max_restarts`` failed restarts in a row."""


class Supervisor:
    """Keeps one worker running; ``run`` returns when supervision ends."""

    def __init__(
        self,
        spec: WorkerSpec,
        policy: RestartPolicy,
        settings: Settings,
        state: StateKeeper,
        *,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        manager: Optional[ManagerCheck] = None,
        storage: Optional[StorageCheck] = None,
        on_worker_start: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.spec = spec
        self.policy = policy
        self.settings = settings
        self.keeper = state
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.manager = manager
        self.storage = storage
        self.on_worker_start = on_worker_start
        self.before_worker_start: Sequence[Callable[[], None]] = ()  # run before each start
        self.stop_reason: Optional[str] = None
        self._starts = 0  # worker starts so far (the first is no restart)
        self._ignored: list[str] = []  # ignored signals received, not logged yet
        # Stop signals received before ``run`` took them over (``stopsignals.hold``).
        self.early_stops: Sequence[str] = ()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.holds = Holds(self._wake)
        self._manager_session: Optional[requests.Session] = None

    # -- controls -------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask for a graceful stop of the worker and the end of supervision (on the
        main thread: its signal handler calls this)."""
        # No lock: a signal handler runs on the main thread between any two of its
        # steps, so a stop signal arriving while a lock taken here was held would wait
        # for it forever. Everything else that sets the reason runs on this thread.
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- the loop -------------------------------------------------------------

    @property
    def state(self) -> AgentState:
        """The agent's current state."""
        return self.keeper.state

    def _update(self, **changes: Any) -> None:
        self.keeper.update(**changes)

    def _wait(self, timeout: Optional[float]) -> None:
        """Sleep until woken (signal, child exit, request) or ``timeout`` passes;
        meanwhile retry a state write that failed."""
        retry = self.keeper.retry_in()
        if retry is not None:
            timeout = retry if timeout is None else min(timeout, retry)
        readable, _, _ = select.select([self._wake_r], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
        if posted := self.holds.take_posted():  # state changes from other threads
            self._update(**posted)
        while self._ignored:
            log.info("ignoring %s: it means nothing to node-agent", self._ignored.pop(0))
        self.keeper.retry()

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep between restarts, cut short by a stop request."""
        deadline = time.monotonic() + seconds
        while self.stop_reason is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wait(remaining)
            proctree.reap()

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        assert retry_state.next_action is not None
        delay = retry_state.next_action.sleep
        if delay <= 0:
            return
        if self.state.crash_loop:
            log.error(
                "crash loop: the worker failed %d times in a row, each within %.0f s of "
                "starting; check its output above. Next start in %.1f s",
                self.state.consecutive_failures,
                self.policy.reset_after,
                delay,
            )
        else:
            log.info("restarting the worker in %.1f s", delay)
        self._update(phase=Phase.BACKING_OFF, next_start_at=time.time() + delay)

    def run(self) -> int:
        """Supervise until a stop request or a final worker exit; returns the agent's
        exit code. Raises ``GaveUp`` after ``max_restarts`` failed restarts in a row."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (*STOP_SIGNALS, *IGNORED_SIGNALS)
        }
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._on_signal)
        if self.early_stops:
            self.request_stop(f"received {self.early_stops[0]}")
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            limit = self.settings.max_restarts
            retrying = Retrying(
                retry=retry_if_exception_type(WorkerExited),
                wait=self._wait_for,
                stop=self._give_up if limit else stop_never,
                sleep=self._sleep,
                before_sleep=self._before_sleep,
                reraise=True,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        self._run_once()
            except WorkerExited as exc:
                raise self._gave_up(
                    f"gave up after {limit} failed restarts in a row (max_restarts); last: "
                    f"{exc.decision.reason}"
                ) from None
            return 0
        finally:
            if self._manager_session is not None:
                self._manager_session.close()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _give_up(self, retry_state: RetryCallState) -> bool:
        """tenacity's stop: ``max_restarts`` failed restarts in a row (the streak a
        healthy run or a requested restart resets), not restarts overall."""
        return self.state.consecutive_failures > self.settings.max_restarts

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum in IGNORED_SIGNALS:
            self._ignored.append(signal.Signals(signum).name)  # logged by _wait
            self._wake()
        elif signum != signal.SIGCHLD:
            self.request_stop(f"received {signal.Signals(signum).name}")

    def _wait_for(self, retry_state: RetryCallState) -> float:
        assert retry_state.outcome is not None
        exc = retry_state.outcome.exception()
        assert isinstance(exc, WorkerExited)
        return self.policy.delay(exc.decision)

    def _run_once(self) -> None:
        """Start the worker, forward its output, wait for its exit, stop what is
        left of its tree, and judge the exit: return to end supervision, raise
        ``WorkerExited`` to restart."""
        if self.stop_reason is None and self.storage is not None:
            wait_for_storage(
                self.storage,
                self._sleep,
                lambda: self.stop_reason is not None,
                lambda: self._update(phase=Phase.WAITING_FOR_STORAGE),
            )
        self._await_release()
        while self.stop_reason is None:
            self._await_manager()
            if self.stop_reason is not None:
                break
            for tell in self.before_worker_start:
                tell()
            if self.holds.reason is None:
                break
            self._await_release()  # a hold that came meanwhile: then all of it again
        if self.stop_reason is not None:
            log.info("supervision ends before the worker starts: %s", self.stop_reason)
            self._finish()
            return
        restarts = self.state.restarts + (self._starts > 0)
        self._starts += 1
        started = time.monotonic()
        try:
            launched = launch(self.spec, self.stdout_fd, self.stderr_fd, self.settings.timestamps)
        except OSError as exc:
            log.error("cannot start the worker %s: %s", self.spec.argv[0], exc.strerror)
            self._update(restarts=restarts)
            self._judge(127 if isinstance(exc, FileNotFoundError) else 126, 0.0)
            return
        process, token = launched.process, launched.token
        self.holds.started()
        self._update(
            phase=Phase.RUNNING,
            restarts=restarts,
            worker_pid=process.pid,
            worker_create_time=psutil.Process(process.pid).create_time(),
            worker_token=token,
            worker_started_at=time.time(),
            next_start_at=None,
        )
        log.info("worker started (pid %d): %s", process.pid, " ".join(self.spec.argv))
        for tell in self.on_worker_start:
            tell()
        code, kill_at = self._wait_for_exit(process, token)
        uptime = time.monotonic() - started
        deadline = kill_at if kill_at is not None else time.monotonic() + self.settings.stop_grace
        proctree.stop_leftovers(token, process.pid, deadline, self._wait, _POLL)
        launched.drain(_PUMP_DRAIN)
        self.holds.running = False
        self._judge(code, uptime)

    def _await_release(self) -> None:
        """While a platform event holds the worker, do not start it."""
        if self.holds.reason is None or self.stop_reason is not None:
            return
        self._update(phase=Phase.WAITING_FOR_PLATFORM, next_start_at=None)
        log.info("waiting for the platform (%s); the worker stays stopped", self.holds.reason)
        while self.holds.reason is not None and self.stop_reason is None:
            self._wait(None)
            proctree.reap()

    def _await_manager(self) -> None:
        """Before every start, wait until the Manager answers: a v3 worker without
        credentials gets one registration attempt only (it exits 1), and one with
        credentials that gets an HTTP error answer at sign-on abandons them and
        registers anew (a duplicate entry on the Manager). The phase says so from
        the first failed attempt on; one connection serves every start."""
        check = self.manager
        if check is None:
            return
        if self._manager_session is None:
            self._manager_session = manager_session(check.api.proxies)
        try:
            wait_for_manager(
                check,
                self._sleep,
                lambda: self.stop_reason is not None,
                on_wait=lambda: self._update(phase=Phase.WAITING_FOR_MANAGER),
                session=self._manager_session,
            )
        except ManagerUnavailable as exc:
            if self.stop_reason is None:
                raise self._gave_up(
                    f"gave up waiting for the Manager after {check.deadline:.0f} s "
                    f"(manager_wait_deadline): {exc}"
                ) from None

    def _wait_for_exit(
        self, process: subprocess.Popen[bytes], token: str
    ) -> tuple[int, Optional[float]]:
        """Wait for the worker's exit, reaping every child meanwhile. On a stop
        request: SIGTERM to the worker and, at the grace deadline, SIGKILL to its
        whole tree. Returns the exit code and the deadline (None: no stop asked)."""
        kill_at: Optional[float] = None
        killed = False
        while True:
            for pid, code in proctree.reap():
                if pid == process.pid:
                    process.returncode = code  # reaped here, so Popen must not wait
                    return code, kill_at
            if (self.stop_reason is not None or self.holds.terminate) and kill_at is None:
                self._update(phase=Phase.STOPPING, stop_reason=self.stop_reason)
                log.info(
                    "stopping the worker (%s): SIGTERM, SIGKILL to its tree after %.0f s",
                    self.stop_reason or self.holds.reason,
                    self.settings.stop_grace,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                self.holds.signalled = self.stop_reason is None
                kill_at = time.monotonic() + self.settings.stop_grace
            if kill_at is not None and not killed and time.monotonic() >= kill_at:
                log.warning(
                    "the worker did not stop within %.0f s: SIGKILL to its whole tree",
                    self.settings.stop_grace,
                )
                proctree.send(proctree.worker_tree(token, process.pid), signal.SIGKILL)
                killed = True
            if kill_at is None:
                self._wait(None)
            elif killed:
                self._wait(_POLL)
            else:
                self._wait(max(0.0, kill_at - time.monotonic()))

    def _judge(self, code: int, uptime: float) -> None:
        exited = {
            "last_exit_code": code,
            "last_exit_at": time.time(),
            "worker_pid": None,
            "worker_create_time": None,
        }
        expected = self.holds.exited(code)
        if self.stop_reason is not None:
            self._update(last_exit_reason=f"stopped: {self.stop_reason}", **exited)
            log.info("worker stopped (exit %d); %s", code, self.stop_reason)
            self._finish()
            return
        if expected is not None:  # for a platform event: started again once released
            self._update(phase=Phase.STARTING, last_exit_reason=f"stopped: {expected}", **exited)
            log.info("worker stopped (exit %d) for the %s", code, expected)
            failures = self.state.consecutive_failures
            raise WorkerExited(Decision(Verdict.RESTART_NOW, f"stopped for {expected}", failures))
        decision = self.policy.decide(code, uptime, self.state.consecutive_failures)
        self._update(
            phase=Phase.STARTING,  # until the next start, a wait or the end says more
            last_exit_reason=decision.reason,
            consecutive_failures=decision.failures,
            crash_loop=decision.crash_loop,
            **exited,
        )
        level = (
            logging.WARNING if decision.verdict is Verdict.RESTART_AFTER_BACKOFF else logging.INFO
        )
        log.log(
            level,
            "worker exited after %.1f s: %s; %s",
            uptime,
            decision.reason,
            decision.verdict.value,
        )
        if decision.verdict is Verdict.STOP:
            self.stop_reason = decision.reason
            self._finish()
            return
        raise WorkerExited(decision)

    def _finish(self) -> None:
        self._update(phase=Phase.STOPPED, stop_reason=self.stop_reason, next_start_at=None)

    def _gave_up(self, reason: str) -> GaveUp:
        """Supervision ends for good: the state says so before the agent exits."""
        self.stop_reason = reason
        self._update(gave_up=True)
        self._finish()
        return GaveUp(reason)
