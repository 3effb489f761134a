"""Azure Scheduled Events: what the document says and what each event means for the
worker. Pure: a document in, events out; an event and a time in, a decision out.

``Preempt`` (Spot eviction, at least 30 s notice) and ``Terminate`` stop the worker
at once, so it signs off and the Manager re-queues its task; ``Reboot`` and
``Redeploy`` stop it shortly before ``NotBefore``; ``Freeze`` (a few seconds' pause)
is only logged, as are types nobody knows yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Optional


class Reaction(Enum):
    """What an event means for the worker."""

    STOP_NOW = "stop now"
    STOP_BEFORE = "stop before NotBefore"
    LOG_ONLY = "log only"


REACTIONS = {
    "Preempt": Reaction.STOP_NOW,
    "Terminate": Reaction.STOP_NOW,
    "Reboot": Reaction.STOP_BEFORE,
    "Redeploy": Reaction.STOP_BEFORE,
    "Freeze": Reaction.LOG_ONLY,
}
# After these the node comes back with a wiped disk (a new worker registers).
DISK_WIPING = ("Preempt", "Terminate")


@dataclass(frozen=True)
class ScheduledEvent:
    """One event of the Scheduled Events document."""

    event_id: str
    event_type: str
    resources: tuple[str, ...]
    not_before: Optional[float]  # Unix time; None once started or when not given

    @property
    def reaction(self) -> Reaction:
        """Unknown types are logged only: stopping on a guess could lose work."""
        return REACTIONS.get(self.event_type, Reaction.LOG_ONLY)


def parse_events(document: Any) -> list[ScheduledEvent]:
    """The events of a Scheduled Events document; ``ValueError`` when it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("Events"), list):
        raise ValueError("not a Scheduled Events document")
    events = []
    for item in document["Events"]:
        if not isinstance(item, dict) or not isinstance(item.get("EventId"), str):
            raise ValueError("an event without an EventId")
        not_before = None
        if item.get("NotBefore"):
            try:
                not_before = parsedate_to_datetime(str(item["NotBefore"])).timestamp()
            except (TypeError, ValueError):
                raise ValueError(f"bad NotBefore {item['NotBefore']!r}") from None
        events.append(
            ScheduledEvent(
                event_id=item["EventId"],
                event_type=str(item.get("EventType", "")),
                resources=tuple(str(r) for r in item.get("Resources") or ()),
                not_before=not_before,
            )
        )
    return events


def due(event: ScheduledEvent, now: float, margin: float) -> bool:
    """Whether the worker must stop for this event now (pure)."""
    if event.reaction is Reaction.STOP_NOW:
        return True
    if event.reaction is Reaction.STOP_BEFORE:
        return event.not_before is None or now >= event.not_before - margin
    return False
