"""Trying again: the wait between attempts, and the one loop that waits until
something the worker needs is ready (the Manager, the shared storage).

A thousand nodes booting together, or coming back after an outage, must not hammer
what they wait for: an attempt that failed is followed by a random wait in an
exponentially growing window, capped (full jitter, tenacity's
``wait_random_exponential``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, TypeVar, cast

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from node_agent.common.errors import unexpected
from node_agent.common.log import get_logger

log = get_logger("retry")

FIRST_WINDOW = 1.0  # seconds: the first retry waits up to this long
T = TypeVar("T")


def backoff(cap: float, first: float = FIRST_WINDOW) -> wait_random_exponential:
    """The wait before attempt n+1: uniform in [0, min(cap, first * 2^(n-1)) s]."""
    return wait_random_exponential(multiplier=first, max=cap)


def doubling(first: float, cap: float) -> Callable[[int], float]:
    """The wait after look n where no jitter is wanted (one process's own looks,
    nothing shared to hammer): ``first * 2^(n-1)`` seconds, capped (tenacity's
    ``wait_exponential``)."""
    wait = wait_exponential(multiplier=first, max=cap)
    return lambda n: float(wait(attempt_state(n)))


def attempt_state(number: int) -> RetryCallState:
    """A retry state for tenacity's wait strategies, which read only the attempt
    number: for counts of our own (consecutive failures, which a healthy run
    resets), outside a ``Retrying`` loop."""
    state = RetryCallState(cast(Any, None), None, (), {})
    state.attempt_number = number
    return state


class _StopWhen(stop_base):
    """tenacity's stop, asked of a predicate (a stop request)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


def wait_until_ready(
    look: Callable[[], T],
    *,
    label: str,
    not_ready: type[Exception],
    cap: float,
    sleep: Callable[[float], None],
    should_stop: Callable[[], bool],
    deadline: Optional[float] = None,
    on_wait: Optional[Callable[[], None]] = None,
) -> T:
    """Call ``look`` until it returns; it raises ``not_ready`` (its message: why)
    while what it looks at is not ready. Between attempts, a full-jitter backoff up
    to ``cap`` seconds and one log line, ``<label>: attempt N after X s: why; next
    attempt in Y s``; ``on_wait`` is called at the first failure. The last
    ``not_ready`` is raised once ``should_stop`` says so (``sleep`` must return
    early then) or past ``deadline`` seconds (None: never). Any other exception of
    ``look`` counts as a failed attempt too: a bug or a fault nobody foresaw in one
    look must not end the node's supervision."""
    started = time.monotonic()
    waited: list[bool] = []

    def attempt() -> T:
        try:
            return look()
        except not_ready:
            raise
        except Exception as exc:  # the last resort: logged, and tried again
            raise not_ready(f"unexpected {unexpected(exc)}") from exc

    def log_attempt(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        if not waited:
            waited.append(True)
            if on_wait is not None:
                on_wait()
        log.warning(
            "%s: attempt %d after %.1f s: %s; next attempt in %.1f s",
            label,
            state.attempt_number,
            time.monotonic() - started,
            state.outcome.exception(),
            state.next_action.sleep,
        )

    retrying = Retrying(
        retry=retry_if_exception_type(not_ready),
        wait=backoff(cap),
        stop=stop_any(
            _StopWhen(should_stop), stop_after_delay(deadline) if deadline else stop_never
        ),
        sleep=sleep,
        before_sleep=log_attempt,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except not_ready:
        if should_stop():
            log.info("%s: stopped waiting after %.1f s", label, time.monotonic() - started)
        raise
