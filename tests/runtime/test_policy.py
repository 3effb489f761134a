"""The restart policy, decided without processes."""

from __future__ import annotations

import pytest

from node_agent.node.flavour import Flavour
from node_agent.runtime.policy import RestartPolicy, Verdict


def _policy(flavour: Flavour = Flavour.V3, clean_restart: bool = False) -> RestartPolicy:
    return RestartPolicy(
        flavour=flavour,
        restart_exit_code=75,
        restart_on_clean_exit=clean_restart,
        backoff_initial=1.0,
        backoff_cap=60.0,
        reset_after=300.0,
        min_uptime=10.0,
    )


def test_restart_code_restarts_now_and_clears_the_streak() -> None:
    decision = _policy().decide(75, uptime=10.0, failures=4)
    assert (decision.verdict, decision.failures) == (Verdict.RESTART_NOW, 0)
    assert _policy().delay(decision) == 0.0


def test_v3_clean_exit_stops_unless_configured() -> None:
    assert _policy().decide(0, 10.0, 0).verdict is Verdict.STOP
    assert _policy().decide(0, 0.1, 3).verdict is Verdict.STOP
    assert _policy(clean_restart=True).decide(0, 10.0, 0).verdict is Verdict.RESTART_NOW


@pytest.mark.parametrize("clean_restart, code", [(False, 75), (True, 0)])
def test_a_requested_restart_right_after_the_start_is_paced_like_a_failure(
    clean_restart: bool, code: int
) -> None:
    # A worker exiting with a restart request at once, forever: a restart storm.
    policy = _policy(clean_restart=clean_restart)
    failures, loops, delays = 0, [], []
    for _ in range(6):
        decision = policy.decide(code, uptime=0.01, failures=failures)
        assert decision.verdict is Verdict.RESTART_AFTER_BACKOFF
        assert "only 0.0 s after it started (min_uptime 10 s)" in decision.reason
        failures = decision.failures
        loops.append(decision.crash_loop)
        delays.append(policy.delay(decision))
    assert failures == 6 and loops == [False, False, False, False, True, True]
    assert all(0 <= d <= 60 for d in delays) and sum(delays) > 0
    # Once the worker ran for min_uptime, a request is honoured at once again.
    later = policy.decide(code, uptime=10.0, failures=failures)
    assert (later.verdict, later.failures) == (Verdict.RESTART_NOW, 0)


def test_v2_clean_exit_is_a_failure() -> None:
    decision = _policy(Flavour.V2).decide(0, 10.0, 0)
    assert decision.verdict is Verdict.RESTART_AFTER_BACKOFF
    assert decision.failures == 1


@pytest.mark.parametrize("code, reason", [(1, "exit code 1"), (-9, "killed by signal 9")])
def test_failures_back_off(code: int, reason: str) -> None:
    decision = _policy().decide(code, 1.0, 2)
    assert (decision.verdict, decision.reason, decision.failures) == (
        Verdict.RESTART_AFTER_BACKOFF,
        reason,
        3,
    )


def test_streak_resets_after_a_healthy_run() -> None:
    assert _policy().decide(1, uptime=301.0, failures=9).failures == 1
    assert _policy().decide(1, uptime=299.0, failures=9).failures == 10


def test_crash_loop_after_five_quick_failures() -> None:
    failures = 0
    loops = []
    for _ in range(6):
        decision = _policy().decide(1, 1.0, failures)
        failures = decision.failures
        loops.append(decision.crash_loop)
    assert loops == [False, False, False, False, True, True]


def test_delays_are_full_jitter_in_a_growing_capped_window() -> None:
    policy = _policy()  # 1 s initial window, 60 s cap
    windows = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for failures, window in enumerate(windows, start=1):
        decision = policy.decide(1, 1.0, failures - 1)
        delays = [policy.delay(decision) for _ in range(300)]
        assert all(0 <= d <= window for d in delays)
        # Full jitter: spread over the whole window, not bunched at its top.
        assert min(delays) < window * 0.2 and max(delays) > window * 0.8
