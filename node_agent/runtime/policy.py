"""What to do when the worker exits. Pure: an exit in, a decision out.

The facts (flamenco-worker.md): the configured restart exit code means "restart
me"; a v3 worker exits 0 only when the Manager asked it to shut down; a v2 worker
also exits 0 after failures, so its 0 proves nothing. Anything else is a failure:
restart after a capped exponential backoff with full jitter (tenacity's
``wait_random_exponential``), the window growing with consecutive failures and
reset once the worker stayed up for ``reset_after`` seconds.

A requested restart (the restart exit code, or a v3 exit 0 under
``restart_on_clean_exit``) is done at once only when the worker ran for at least
``min_uptime`` seconds. One that comes sooner is no real request but a worker that
cannot stay up (a restart storm: thousands of starts a minute, each signing on at
the Manager): it counts as a failure and backs off like one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from node_agent.common.retry import attempt_state, backoff
from node_agent.node.flavour import Flavour

CRASH_LOOP_FAILURES = 5  # consecutive short-lived failed runs that make a crash loop


class Verdict(Enum):
    """What the supervisor does next."""

    RESTART_NOW = "restart now"
    RESTART_AFTER_BACKOFF = "restart after backoff"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    """The verdict on one exit, why, and the failure streak it leaves."""

    verdict: Verdict
    reason: str
    failures: int  # consecutive failed runs, this one included

    @property
    def crash_loop(self) -> bool:
        """Whether the worker keeps dying soon after it starts."""
        return self.failures >= CRASH_LOOP_FAILURES


@dataclass(frozen=True)
class RestartPolicy:
    """The operator's restart settings for one worker flavour."""

    flavour: Flavour
    restart_exit_code: int
    restart_on_clean_exit: bool
    backoff_initial: float
    backoff_cap: float
    reset_after: float
    min_uptime: float

    def decide(self, exit_code: int, uptime: float, failures: int) -> Decision:
        """Judge an exit (``-N``: killed by signal N) after ``uptime`` seconds, with
        ``failures`` consecutive failed runs before this one."""
        streak = 0 if uptime >= self.reset_after else failures
        requested = None
        if exit_code == self.restart_exit_code:
            requested = "the worker asked to be restarted"
        elif exit_code == 0 and self.flavour is Flavour.V3:
            if not self.restart_on_clean_exit:
                return Decision(Verdict.STOP, "the Manager asked the worker to shut down", 0)
            requested = "clean exit; restart_on_clean_exit"
        if requested is not None:
            if uptime >= self.min_uptime:
                return Decision(Verdict.RESTART_NOW, requested, 0)
            reason = (
                f"{requested}, but only {uptime:.1f} s after it started "
                f"(min_uptime {self.min_uptime:g} s): paced like a failure"
            )
            return Decision(Verdict.RESTART_AFTER_BACKOFF, reason, streak + 1)
        if exit_code == 0:
            reason = "exit 0, which a v2 worker also gives after failures"
        elif exit_code < 0:
            reason = f"killed by signal {-exit_code}"
        else:
            reason = f"exit code {exit_code}"
        return Decision(Verdict.RESTART_AFTER_BACKOFF, reason, streak + 1)

    def delay(self, decision: Decision) -> float:
        """Seconds to wait before the next start."""
        if decision.verdict is not Verdict.RESTART_AFTER_BACKOFF:
            return 0.0
        wait = backoff(self.backoff_cap, first=self.backoff_initial)
        delay: float = wait(attempt_state(decision.failures))
        return delay
