"""The one wait-until-ready loop (``retry``): backoff, the stop, the deadline, and
the last resort for what nobody expected."""

from __future__ import annotations

import logging
import re

import pytest

from node_agent.common.retry import attempt_state, backoff, doubling, wait_until_ready


class NotReady(Exception):
    pass


def _look(outcomes: list[object]) -> object:
    """The next look: raise the exception it is, else return it."""
    outcome = outcomes.pop(0)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def test_an_unexpected_exception_is_one_more_failed_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    outcomes: list[object] = [NotReady("not yet"), AttributeError("no 'get' on a list"), "ready"]
    delays: list[float] = []
    waits: list[bool] = []
    answer = wait_until_ready(
        lambda: _look(outcomes),
        label="the thing",
        not_ready=NotReady,
        cap=8.0,
        sleep=delays.append,
        should_stop=lambda: False,
        on_wait=lambda: waits.append(True),
    )
    assert answer == "ready" and waits == [True] and len(delays) == 2
    assert all(0 <= d <= 2 ** (n - 1) for n, d in enumerate(delays, start=1))  # backed off
    lines = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(
        r"the thing: attempt 1 after \d+\.\d s: not yet; next attempt in .*", lines[0]
    )
    assert re.fullmatch(
        r"the thing: attempt 2 after \d+\.\d s: unexpected AttributeError at test_retry\.py:\d+: "
        r"no 'get' on a list; next attempt in .*",
        lines[1],
    )


def test_a_stop_ends_the_wait_with_the_last_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    stop: list[bool] = []
    with pytest.raises(NotReady, match="unexpected KeyError"):
        wait_until_ready(
            lambda: _look([KeyError("compute")]),
            label="the thing",
            not_ready=NotReady,
            cap=1.0,
            sleep=lambda _s: stop.append(True),
            should_stop=lambda: bool(stop),
        )
    assert re.fullmatch(r"the thing: stopped waiting after \d+\.\d s", caplog.messages[-1])


def test_past_the_deadline_the_last_reason_is_raised() -> None:
    with pytest.raises(NotReady, match="still not"):
        wait_until_ready(
            lambda: _look([NotReady("still not")]),
            label="the thing",
            not_ready=NotReady,
            cap=1.0,
            sleep=lambda _s: None,
            should_stop=lambda: False,
            deadline=1e-9,
        )


def test_the_backoff_window_doubles_up_to_the_cap() -> None:
    wait = backoff(4.0, first=0.5)
    for attempt, window in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        assert all(0 <= wait(attempt_state(attempt)) <= window for _ in range(50))


def test_doubling_looks_start_at_first_and_stop_at_the_cap() -> None:
    delays = doubling(0.01, 0.5)
    assert [delays(n) for n in range(1, 9)] == pytest.approx(
        [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
    )
