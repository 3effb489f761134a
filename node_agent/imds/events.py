"""Azure Scheduled Events: what the document says and what each event means for the
worker. Pure: a document in, events out; the events, what the agent is doing about
one and the time in, the next step out.

The events that take the node (``Preempt``, ``Terminate``, ``Reboot``,
``Redeploy``) stop the worker shortly before ``NotBefore`` (SIGTERM: it signs off
and the Manager re-queues its task), and until then it is wound down (it finishes
its current task and takes no new one). So a Spot eviction's 30 s notice stops it
at once, a Reboot's 15 minutes let its task finish. ``Freeze`` (a few seconds'
pause) is only logged, as are types nobody knows yet. Once the worker has stopped,
the platform is told to go ahead when the event is due, or at once for an
operator's event (``EventSource: User``). Events can be cancelled (they leave the
list before they start) and a Reboot can turn into a Freeze: then, or when an event
is long overdue and the node is still here (the Metadata Service answering or not),
the worker works again. Of several events the most urgent is acted on: a Preempt
listed during a Reboot's wind-down stops the worker at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Optional


class Reaction(Enum):
    """What an event means for the worker."""

    STOP = "stop before NotBefore"
    LOG_ONLY = "log only"


REACTIONS = {
    "Preempt": Reaction.STOP,
    "Terminate": Reaction.STOP,
    "Reboot": Reaction.STOP,
    "Redeploy": Reaction.STOP,
    "Freeze": Reaction.LOG_ONLY,
}
# After these the node comes back with a wiped disk (a new worker registers).
DISK_WIPING = ("Preempt", "Terminate", "Redeploy")
# An event this long past its NotBefore (or, without one, past the moment the agent
# acted on it) while the node is still here is not going to happen.
OVERDUE = 300.0  # seconds
# A wind-down the Manager did not take is asked again after this many seconds (each
# try may wait on a Manager that is away, and the watcher waits with it).
ASK_AGAIN = 15.0


@dataclass(frozen=True)
class ScheduledEvent:
    """One event of the Scheduled Events document."""

    event_id: str
    event_type: str
    resources: tuple[str, ...]
    not_before: Optional[float]  # Unix time; None once started, when not given or unreadable
    source: str = "Platform"  # "User": an operator's (a reboot from the portal)
    status: str = "Scheduled"  # "Started" once it is under way
    problems: tuple[str, ...] = ()  # what the document got wrong about it
    acknowledgeable: bool = True  # False without an EventId: nothing to name in a reply
    duration: float = 0.0  # seconds the interruption is expected to last (0: unknown)

    @property
    def reaction(self) -> Reaction:
        """Unknown types are logged only: stopping on a guess could lose work."""
        return REACTIONS.get(self.event_type, Reaction.LOG_ONLY)


def parse_events(document: Any) -> list[ScheduledEvent]:
    """The events of a Scheduled Events document; ``ValueError`` when it is not one.

    Each event is read on its own, so one the document gets wrong never hides
    another (this VM's Preempt beside someone else's garbage). An event read in
    part says what was wrong in ``problems`` and is read the safe way: an unreadable
    ``NotBefore`` means at once; without an ``EventId`` it is acted on but cannot be
    acknowledged; an entry that is no object, or names no ``Resources``, concerns
    nobody we can tell and is left out."""
    if not isinstance(document, dict) or not isinstance(document.get("Events"), list):
        raise ValueError("not a Scheduled Events document")
    events = []
    for item in document["Events"]:
        if isinstance(item, dict):
            event = _event(item)
            if event is not None:
                events.append(event)
    return events


def _event(item: dict[str, Any]) -> Optional[ScheduledEvent]:
    resources = item.get("Resources")
    if isinstance(resources, str):
        resources = [resources]
    if not isinstance(resources, list) or not resources:
        return None
    problems = []
    event_type = str(item.get("EventType") or "")
    event_id = item.get("EventId")
    acknowledgeable = isinstance(event_id, str) and event_id != ""
    if not acknowledgeable:
        problems.append(f"no EventId ({event_id!r}): it cannot be acknowledged")
        event_id = f"(no EventId: {event_type or 'no type'})"
    duration = item.get("DurationInSeconds")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
        duration = 0.0  # -1: unknown, the documented value for most events
    not_before = None
    if item.get("NotBefore"):
        try:
            not_before = parsedate_to_datetime(str(item["NotBefore"])).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            problems.append(f"unreadable NotBefore {str(item['NotBefore'])!r}: taken as now")
    return ScheduledEvent(
        event_id=str(event_id),
        event_type=event_type,
        resources=tuple(str(r) for r in resources),
        not_before=not_before,
        source=str(item.get("EventSource") or "Platform"),
        status=str(item.get("EventStatus") or "Scheduled"),
        problems=tuple(problems),
        acknowledgeable=acknowledgeable,
        duration=float(min(duration, OVERDUE * 12)),
    )


def due(event: ScheduledEvent, now: float, margin: float) -> bool:
    """Whether the worker must stop for this event now (pure)."""
    if event.reaction is Reaction.STOP:
        return event.not_before is None or now >= event.not_before - margin
    return False


def deadline(event: ScheduledEvent, margin: float) -> Optional[float]:
    """When the worker must be stopped for an event at the latest (None: at once)."""
    if event.reaction is Reaction.STOP and event.not_before is not None:
        return event.not_before - margin
    return None


class Step(Enum):
    """What the agent does next about the platform's events."""

    NOTHING = "nothing"
    WIND_DOWN = "wind down"  # current task finishes, no new one; stop at the deadline
    STOP = "stop"  # stop the worker now (SIGTERM)
    GO_AHEAD = "go ahead"  # the worker has stopped: forget it if need be, acknowledge
    RESUME = "resume"  # the event is off: the worker works again


@dataclass(frozen=True)
class Hold:
    """What the agent is doing about one event: since when, how far it got."""

    event: ScheduledEvent  # as last seen
    since: float  # Unix time the agent began to act on it
    not_before: Optional[float] = None  # the last NotBefore seen (gone once started)
    stopping: bool = False  # the worker was told to stop now (SIGTERM)
    wound_down: bool = False  # the worker was asked to stop once its task is done
    asked_at: float = 0.0  # when that was last tried
    approved_at: Optional[float] = None  # when the platform was told to go ahead

    def seen(self, event: ScheduledEvent) -> Hold:
        """The hold with the event's latest view (its last NotBefore kept)."""
        return replace(self, event=event, not_before=event.not_before or self.not_before)

    def overdue(self, now: float) -> bool:
        """Whether the event is long past its time (and the interruption it announced
        long over) with the node still here."""
        expected = self.not_before or self.approved_at or self.since
        return now > max(expected, self.approved_at or 0.0) + self.event.duration + OVERDUE


@dataclass(frozen=True)
class Decision:
    """The next step, the event it is about, and why (for the log)."""

    step: Step
    event: Optional[ScheduledEvent] = None
    why: str = ""
    overdue: bool = False  # RESUME for an event still listed: never act on it again


def describe(event: ScheduledEvent) -> str:
    """``Reboot event R-1`` (with ``, by an operator`` for user events)."""
    by = ", by an operator" if event.source == "User" else ""
    return f"{event.event_type} event {event.event_id}{by}"


def _stale(event: ScheduledEvent, now: float) -> bool:
    """Whether an event is long past its NotBefore (and its interruption's length)."""
    return event.not_before is not None and now > event.not_before + event.duration + OVERDUE


def _unknown(hold: Optional[Hold], now: float, margin: float) -> Decision:
    """The next step while the Metadata Service cannot be asked: the deadline of the
    event held still stands, and a hold long overdue is given up."""
    if hold is None:
        return Decision(Step.NOTHING)
    if hold.overdue(now):
        held = describe(hold.event)
        why = f"the {held} is long overdue, the node is still here and IMDS is silent"
        return Decision(Step.RESUME, hold.event, why, overdue=True)
    last = replace(hold.event, not_before=hold.not_before)
    if not hold.stopping and hold.not_before is not None and due(last, now, margin):
        return Decision(Step.STOP, hold.event)
    return Decision(Step.NOTHING, hold.event)


def _urgency(event: ScheduledEvent, margin: float) -> float:
    """When the worker must be stopped for an event: the sooner, the more urgent."""
    stop_at = deadline(event, margin)
    return float("-inf") if stop_at is None else stop_at


def decide(
    events: Optional[list[ScheduledEvent]],
    hold: Optional[Hold],
    *,
    now: float,
    margin: float,
    stopped: bool,
    ignored: frozenset[str] = frozenset(),
) -> Decision:
    """The next step for this VM's ``events`` (pure; None: the Metadata Service
    could not be asked). ``hold``: the event the agent is acting on; ``stopped``:
    whether the worker has stopped for it; ``margin``: seconds before NotBefore by
    which the worker must have been told to stop; ``ignored``: events found
    overdue, never acted on again.

    The agent acts on the most urgent event: a Preempt listed while the worker
    winds down for a later Reboot takes over at once. An event that is off
    (cancelled, turned into a Freeze, over with the node still here) lets the
    worker work again, unless another is due now."""
    if events is None:
        return _unknown(hold, now, margin)
    held_id = hold.event.event_id if hold is not None else None
    wanted = [
        e
        for e in events
        if e.reaction is not Reaction.LOG_ONLY
        and e.event_id not in ignored
        # An event long past its time (other than the one held) will not happen.
        and (e.event_id == held_id or not _stale(e, now))
    ]
    # The most urgent first: an event due at once before one due later.
    target = min(wanted, key=lambda e: _urgency(e, margin), default=None)
    if hold is None:
        if target is None:
            return Decision(Step.NOTHING)
        return Decision(Step.STOP if due(target, now, margin) else Step.WIND_DOWN, target)
    current = next((e for e in events if e.event_id == hold.event.event_id), None)
    if current is None or current not in wanted:
        held = describe(hold.event)
        if current is not None and current.reaction is Reaction.LOG_ONLY:
            why = f"the {held} turned into a {current.event_type}"
        elif hold.approved_at is not None:
            why = f"the {held} is over and the node is still here"
        else:
            why = f"the {held} was cancelled"
        if target is not None and due(target, now, margin):
            return Decision(Step.STOP, target, why)  # the worker stays stopped, for this one
        if target is not None and not hold.stopping and not stopped:
            # Still running, wound down: it stays so for the next event, rather than
            # being set awake and wound down again a second later.
            return Decision(Step.WIND_DOWN, target, why)
        return Decision(Step.RESUME, hold.event, why)
    if target is not None and _urgency(target, margin) < _urgency(current, margin):
        return Decision(Step.STOP if due(target, now, margin) else Step.WIND_DOWN, target)
    if hold.seen(current).overdue(now):
        late = now - (hold.not_before or hold.since)
        why = f"the {describe(current)} is {late:.0f} s overdue and the node is still here"
        return Decision(Step.RESUME, current, why, overdue=True)
    if not hold.stopping and due(current, now, margin):
        return Decision(Step.STOP, current)
    if not hold.stopping and not hold.wound_down and now >= hold.asked_at + ASK_AGAIN:
        return Decision(Step.WIND_DOWN, current)  # the last request did not get through
    if (
        stopped
        and hold.approved_at is None
        and (due(current, now, margin) or current.source == "User")
    ):
        return Decision(Step.GO_AHEAD, current)
    return Decision(Step.NOTHING, current)
