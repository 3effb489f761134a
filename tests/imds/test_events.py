"""The lifecycle of a platform event, decided (pure) and carried out (the reaction
with a recording supervisor, Manager and Metadata Service)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import pytest

from node_agent.imds.events import (
    ASK_AGAIN,
    OVERDUE,
    Hold,
    ScheduledEvent,
    Step,
    decide,
    parse_events,
)
from node_agent.runtime.holds import Holds
from node_agent.runtime.reaction import EventReaction

NOW = 1_000_000.0
MARGIN = 45.0


def _event(
    kind: str,
    not_before: Optional[float] = None,
    event_id: str = "E-1",
    source: str = "Platform",
) -> ScheduledEvent:
    return ScheduledEvent(event_id, kind, ("vm",), not_before, source)


def _decide(
    events: Optional[list[ScheduledEvent]],
    hold: Optional[Hold] = None,
    *,
    stopped: bool = False,
    now: float = NOW,
    ignored: frozenset[str] = frozenset(),
) -> tuple[Step, Optional[str], str]:
    d = decide(events, hold, now=now, margin=MARGIN, stopped=stopped, ignored=ignored)
    return d.step, d.event.event_id if d.event else None, d.why


def test_source_and_status_are_read() -> None:
    [event] = parse_events(
        {
            "Events": [
                {
                    "EventId": "U",
                    "EventType": "Reboot",
                    "Resources": ["vm"],
                    "EventSource": "User",
                    "EventStatus": "Started",
                    "NotBefore": "",
                }
            ]
        }
    )
    assert (event.source, event.status, event.not_before) == ("User", "Started", None)
    [plain] = parse_events(
        {"Events": [{"EventId": "P", "EventType": "Preempt", "Resources": ["v"]}]}
    )
    assert (plain.source, plain.status) == ("Platform", "Scheduled")


def test_what_starts_a_stop() -> None:
    assert _decide([])[0] is Step.NOTHING
    assert _decide([_event("Freeze")])[0] is Step.NOTHING
    assert _decide([_event("Preempt", NOW + 30)])[:2] == (Step.STOP, "E-1")
    assert _decide([_event("Terminate")])[:2] == (Step.STOP, "E-1")  # no NotBefore: now
    # Any event whose NotBefore leaves time winds the worker down first.
    assert _decide([_event("Terminate", NOW + 600)])[0] is Step.WIND_DOWN
    assert _decide([_event("Reboot", NOW + 600)])[0] is Step.WIND_DOWN
    assert _decide([_event("Redeploy", NOW + 40)])[0] is Step.STOP  # within the margin
    assert _decide([_event("Reboot", NOW + 600, source="User")])[0] is Step.WIND_DOWN
    # The most urgent event first.
    both = [_event("Reboot", NOW + 600, "R"), _event("Preempt", NOW + 30, "P")]
    assert _decide(both)[:2] == (Step.STOP, "P")


def test_a_wound_down_worker_is_stopped_at_the_deadline() -> None:
    reboot = _event("Reboot", NOW + 600)
    hold = replace(Hold(reboot, NOW).seen(reboot), wound_down=True, asked_at=NOW)
    assert _decide([reboot], hold)[0] is Step.NOTHING
    assert _decide([reboot], hold, now=NOW + 600 - MARGIN)[0] is Step.STOP
    stopping = replace(hold, stopping=True)
    assert _decide([reboot], stopping, now=NOW + 600 - MARGIN)[0] is Step.NOTHING
    # A wind-down the Manager did not take is asked again, not every poll.
    not_taken = replace(hold, wound_down=False)
    assert _decide([reboot], not_taken, now=NOW + 1)[0] is Step.NOTHING
    assert _decide([reboot], not_taken, now=NOW + ASK_AGAIN)[0] is Step.WIND_DOWN


def test_a_preempt_during_a_reboots_wind_down_stops_the_worker_at_once() -> None:
    reboot, preempt = _event("Reboot", NOW + 900, "R-1"), _event("Preempt", NOW + 30, "P-1")
    hold = replace(Hold(reboot, NOW).seen(reboot), wound_down=True, asked_at=NOW)
    assert _decide([reboot, preempt], hold, now=NOW + 5)[:2] == (Step.STOP, "P-1")
    # Even once the Reboot was approved: the Preempt wipes the disk, so it is the
    # one to go ahead for (and to forget the worker for).
    approved = replace(hold, stopping=True, approved_at=NOW + 1)
    assert _decide([reboot, preempt], approved, stopped=True)[:2] == (Step.STOP, "P-1")
    # A later event never takes over.
    later = _event("Reboot", NOW + 1200, "R-2")
    assert _decide([reboot, later], hold, now=NOW + 5)[0] is Step.NOTHING


def test_the_platform_goes_ahead_once_the_worker_stopped() -> None:
    preempt = _event("Preempt", NOW + 30)
    hold = replace(Hold(preempt, NOW).seen(preempt), stopping=True)
    assert _decide([preempt], hold)[0] is Step.NOTHING  # still stopping
    assert _decide([preempt], hold, stopped=True)[0] is Step.GO_AHEAD
    approved = replace(hold, approved_at=NOW)
    assert _decide([preempt], approved, stopped=True)[0] is Step.NOTHING
    # A platform Reboot whose worker went offline early waits for its deadline; an
    # operator's is approved at once.
    reboot = _event("Reboot", NOW + 600)
    wound = replace(Hold(reboot, NOW).seen(reboot), wound_down=True)
    assert _decide([reboot], wound, stopped=True)[0] is Step.NOTHING
    users = replace(reboot, source="User")
    assert _decide([users], replace(wound, event=users), stopped=True)[0] is Step.GO_AHEAD


def test_events_that_do_not_happen_resume_the_worker() -> None:
    preempt = _event("Preempt", NOW + 30, "P-1")
    hold = Hold(preempt, NOW).seen(preempt)
    step, event, why = _decide([], hold, stopped=True)
    assert (step, event, why) == (Step.RESUME, "P-1", "the Preempt event P-1 was cancelled")
    over = replace(hold, approved_at=NOW + 5)
    assert _decide([], over)[2] == "the Preempt event P-1 is over and the node is still here"
    reboot = _event("Reboot", NOW + 20, "R-1")
    freeze = replace(reboot, event_type="Freeze")
    assert _decide([freeze], Hold(reboot, NOW), stopped=True)[:3] == (
        Step.RESUME,
        "R-1",
        "the Reboot event R-1 turned into a Freeze",
    )
    # The held event is gone and another is listed: the worker works until that
    # one needs it stopped (wound down at the next poll), unless that is now.
    other = _event("Reboot", NOW + 600, "R-2")
    assert _decide([other], hold, stopped=True)[:3] == (
        Step.RESUME,
        "P-1",
        "the Preempt event P-1 was cancelled",
    )
    terminate = _event("Terminate", None, "T-1")
    assert _decide([terminate], hold, stopped=True)[:2] == (Step.STOP, "T-1")


def test_a_hold_is_given_up_when_overdue_even_while_imds_is_silent() -> None:
    preempt = _event("Preempt", NOW + 30, "P-1")
    hold = replace(Hold(preempt, NOW).seen(preempt), stopping=True, approved_at=NOW + 5)
    assert _decide(None, None, now=NOW + 10_000)[0] is Step.NOTHING
    assert _decide(None, hold, now=NOW + 30 + OVERDUE)[0] is Step.NOTHING
    d = decide(None, hold, now=NOW + 31 + OVERDUE, margin=MARGIN, stopped=True)
    assert (d.step, d.overdue) == (Step.RESUME, True)
    assert d.why == (
        "the Preempt event P-1 is long overdue, the node is still here and IMDS is silent"
    )


def test_an_interruption_of_known_length_is_overdue_only_after_it() -> None:
    reboot = replace(_event("Reboot", NOW + 600, "R-1"), duration=900.0)
    hold = replace(Hold(reboot, NOW).seen(reboot), stopping=True, approved_at=NOW + 600)
    started = replace(reboot, not_before=None, status="Started")
    assert _decide([started], hold, stopped=True, now=NOW + 600 + OVERDUE + 1)[0] is Step.NOTHING
    late = _decide([started], hold, stopped=True, now=NOW + 600 + 900 + OVERDUE + 1)
    assert late[0] is Step.RESUME
    [parsed] = parse_events(
        {"Events": [{"EventId": "R", "Resources": ["v"], "DurationInSeconds": 900}]}
    )
    assert parsed.duration == 900.0
    for odd in (-1, "900", True, None):
        [parsed] = parse_events(
            {"Events": [{"EventId": "R", "Resources": ["v"], "DurationInSeconds": odd}]}
        )
        assert parsed.duration == 0.0


def test_an_overdue_event_resumes_the_worker_and_is_ignored_after() -> None:
    preempt = _event("Preempt", NOW + 30, "P-1")
    hold = replace(Hold(preempt, NOW).seen(preempt), stopping=True, approved_at=NOW + 5)
    started = replace(preempt, not_before=None, status="Started")  # NotBefore gone
    assert _decide([started], hold, stopped=True, now=NOW + 30 + OVERDUE)[0] is Step.NOTHING
    d = decide([started], hold, now=NOW + 31 + OVERDUE, margin=MARGIN, stopped=True)
    assert (d.step, d.overdue) == (Step.RESUME, True)
    assert (
        d.why == f"the Preempt event P-1 is {OVERDUE + 1:.0f} s overdue and the node is still here"
    )
    assert _decide([started], now=NOW + 400, ignored=frozenset({"P-1"}))[0] is Step.NOTHING


class Recorder:
    """The supervisor's, the Manager's and the Metadata Service's side, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.held = False

    def hold(self, reason: str, *, terminate: bool) -> None:
        self.calls.append(f"hold {reason}{' SIGTERM' if terminate else ''}")

    def release(self, *, told: bool = True) -> None:
        self.calls.append("release" if told else "release (taken back)")
        self.held = False

    def forget(self) -> bool:
        self.calls.append("forget")
        return True

    def acknowledge(self, event_id: str, event_type: str) -> bool:
        self.calls.append(f"ack {event_id}")
        return True


def test_a_preempt_stops_forgets_acknowledges_and_a_cancel_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    side = Recorder()
    react = EventReaction(side, margin=MARGIN, forget=side.forget, acknowledge=side.acknowledge)
    react([], NOW)
    preempt = _event("Preempt", NOW + 30, "P-1")
    react([preempt], NOW)
    react([preempt], NOW + 1)  # still stopping: nothing again
    side.held = True
    react([preempt], NOW + 2)
    react([preempt], NOW + 3)  # approved once
    react([], NOW + 4)
    assert side.calls == ["hold Preempt event P-1 SIGTERM", "forget", "ack P-1", "release"]
    assert (
        "the Preempt event P-1 is over and the node is still here; its entry was removed "
        "from the Manager, so the worker registers anew under the same name: the worker "
        "works again" in caplog.text
    )
    assert react.hold is None


def test_a_reboot_without_a_manager_api_is_stopped_at_its_deadline() -> None:
    side = Recorder()
    react = EventReaction(side, margin=MARGIN, acknowledge=side.acknowledge)
    reboot = _event("Reboot", NOW + 600, "R-1")
    react([reboot], NOW)  # v2: nothing to wind down with
    assert side.calls == []
    react([reboot], NOW + 600 - MARGIN)
    side.held = True
    react([reboot], NOW + 600 - MARGIN + 1)
    assert side.calls == ["hold Reboot event R-1 SIGTERM", "ack R-1"]  # not disk-wiping


def test_an_event_without_an_eventid_is_acted_on_but_never_acknowledged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    side = Recorder()
    react = EventReaction(side, margin=MARGIN, forget=side.forget, acknowledge=side.acknowledge)
    nameless = replace(_event("Terminate", None, "(no EventId: Terminate)"), acknowledgeable=False)
    react([nameless], NOW)
    side.held = True
    react([nameless], NOW + 1)
    assert side.calls == ["hold Terminate event (no EventId: Terminate) SIGTERM", "forget"]
    assert "cannot be acknowledged" in caplog.text


class Status:
    """The Manager's side of status requests: refuses the first ``refusals``."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.asked: list[Optional[str]] = []

    def want(self, cause: str, status: Optional[str]) -> bool:
        self.asked.append(status)
        self.refusals -= 1
        return self.refusals < 0

    def forget(self) -> None:
        pass


def test_a_wind_down_the_manager_did_not_take_is_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    side, status = Recorder(), Status(refusals=2)
    react = EventReaction(side, margin=MARGIN, status=status)  # type: ignore[arg-type]
    reboot = _event("Reboot", NOW + 900, "R-1")
    for second in range(0, 40):
        react([reboot], NOW + second)
    assert status.asked == ["offline"] * 3  # at 0 s, 15 s and 30 s: taken then
    # Held from the first try: a worker not running is not started into the event.
    assert side.calls == ["hold Reboot event R-1"] * 3
    assert caplog.text.count("is not known to be in force at the Manager yet") == 2


def test_an_event_naming_other_vms_too_is_never_acknowledged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    side = Recorder()
    react = EventReaction(side, margin=MARGIN, forget=side.forget, acknowledge=side.acknowledge)
    shared = replace(_event("Preempt", NOW + 30, "P-1"), resources=("vm", "vm-2", "vm-3"))
    react([shared], NOW)
    side.held = True
    react([shared], NOW + 1)
    assert side.calls == ["hold Preempt event P-1 SIGTERM", "forget"]
    assert "it concerns 2 other VM(s) too" in caplog.text


def test_the_reaction_follows_the_most_urgent_event() -> None:
    side, status = Recorder(), Status(refusals=0)
    react = EventReaction(
        side,
        margin=MARGIN,
        status=status,  # type: ignore[arg-type]
        forget=side.forget,
        acknowledge=side.acknowledge,
    )
    reboot, preempt = _event("Reboot", NOW + 900, "R-1"), _event("Preempt", NOW + 40, "P-1")
    react([reboot], NOW)
    react([reboot, preempt], NOW + 1)
    side.held = True
    react([reboot, preempt], NOW + 2)
    assert side.calls == [
        "hold Reboot event R-1",
        "hold Preempt event P-1 SIGTERM",
        "forget",
        "ack P-1",
    ]
    assert react.hold is not None and react.hold.event.event_id == "P-1"


def test_while_imds_is_silent_the_deadline_still_stands() -> None:
    reboot = _event("Reboot", NOW + 600, "R-1")
    hold = replace(Hold(reboot, NOW).seen(reboot), wound_down=True, asked_at=NOW)
    assert _decide(None, hold, now=NOW + 10)[0] is Step.NOTHING
    assert _decide(None, hold, now=NOW + 600 - MARGIN)[:2] == (Step.STOP, "R-1")
    stopping = replace(hold, stopping=True)
    assert _decide(None, stopping, now=NOW + 600 - MARGIN)[0] is Step.NOTHING


def test_a_wound_down_worker_stays_so_when_its_event_gives_way_to_another() -> None:
    later, sooner = _event("Reboot", NOW + 900, "R-A"), _event("Redeploy", NOW + 600, "R-B")
    hold = replace(Hold(sooner, NOW).seen(sooner), wound_down=True, asked_at=NOW)
    # R-B is called off while the worker still runs its last task: no awake, no
    # offline again a poll later: it stays wound down, now for R-A.
    assert _decide([later], hold, now=NOW + 5) == (
        Step.WIND_DOWN,
        "R-A",
        "the Redeploy event R-B was cancelled",
    )
    # Once it has stopped, it works again until R-A needs it stopped.
    assert _decide([later], hold, now=NOW + 5, stopped=True)[:2] == (Step.RESUME, "R-B")


def test_an_event_long_past_its_time_when_first_seen_is_never_acted_on() -> None:
    stale = _event("Reboot", NOW - OVERDUE - 60, "R-OLD")
    assert _decide([stale])[0] is Step.NOTHING
    fresh = _event("Reboot", NOW - 60, "R-NOW")  # past, not long: due at once
    assert _decide([stale, fresh])[:2] == (Step.STOP, "R-NOW")


def test_an_offline_taken_back_explains_only_an_exit_soon_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holds = Holds(lambda: None)
    holds.started()
    holds.hold("Reboot event R-1", terminate=False)
    holds.release(told=False)  # the offline was taken back: set awake again
    assert holds.exited(0) == "Reboot event R-1"  # one already going offline
    holds.started()
    holds.hold("Reboot event R-2", terminate=False)
    monkeypatch.setattr("node_agent.runtime.holds.TAKEN_BACK_WINDOW", -1.0)
    holds.release(told=False)
    assert holds.exited(0) is None  # later: the Manager's, as ever
    # An older offline the agent could not take back explains an early exit 0 of
    # the next run only.
    monkeypatch.setattr("node_agent.runtime.holds.TOLD_WINDOW", -1.0)
    holds.may_be_told_offline("offline node-agent asked for earlier")
    holds.started()
    assert holds.exited(0) is None  # (the window is shut in this test)
    monkeypatch.setattr("node_agent.runtime.holds.TOLD_WINDOW", 600.0)
    holds.may_be_told_offline("offline node-agent asked for earlier")
    holds.started()
    assert holds.exited(0) == "offline node-agent asked for earlier"
    holds.started()
    assert holds.exited(0) is None  # one run only
