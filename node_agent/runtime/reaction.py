"""Carry out what ``events.decide`` says, for this node: wind the worker down through
the Manager, stop it, keep it stopped while the platform has the node, forget it on
the Manager when the node's disk will be lost, let the platform go ahead, and start
the worker again when the event is off.

Called by the watcher thread after every successful poll with this VM's events;
costs nothing while there are none.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Optional, Protocol

from node_agent.common.log import get_logger
from node_agent.imds.events import (
    ASK_AGAIN,
    DISK_WIPING,
    Decision,
    Hold,
    ScheduledEvent,
    Step,
    deadline,
    decide,
    describe,
)
from node_agent.manager.status import StatusRequests

log = get_logger("reaction")


class Holder(Protocol):
    """The supervisor's side (``holds.Holds``)."""

    def hold(self, reason: str, *, terminate: bool) -> None: ...

    def release(self, *, told: bool = True) -> None: ...

    @property
    def held(self) -> bool: ...


def _clock(stamp: Optional[float]) -> str:
    return "at once" if stamp is None else time.strftime("%H:%M:%S UTC", time.gmtime(stamp))


class EventReaction:
    """This node's reaction to its Scheduled Events.

    ``status``: the v3 worker's status requests (None: no lazy stop, v2);
    ``forget``: removes the worker's entry from the Manager, True when it did (None:
    never); ``acknowledge(event_id, event_type)``: tells the platform to go ahead
    (None: never).
    """

    def __init__(
        self,
        holder: Holder,
        *,
        margin: float,
        status: Optional[StatusRequests] = None,
        forget: Optional[Callable[[], bool]] = None,
        acknowledge: Optional[Callable[[str, str], bool]] = None,
    ) -> None:
        self.holder = holder
        self.margin = margin
        self.status = status
        self.forget = forget
        self.acknowledge = acknowledge
        self.hold: Optional[Hold] = None
        self.ignored: set[str] = set()  # overdue events: never acted on again
        self._forgotten = False

    def __call__(self, events: Optional[list[ScheduledEvent]], now: float) -> None:
        """React to this VM's events as the Metadata Service listed them at ``now``
        (None: it could not be asked; a hold long overdue is given up)."""
        if not events and self.hold is None:
            return
        decision = decide(
            events,
            self.hold,
            now=now,
            margin=self.margin,
            stopped=self.holder.held,
            ignored=frozenset(self.ignored),
        )
        if decision.step is Step.NOTHING:
            if self.hold is not None and decision.event is not None:
                self.hold = self.hold.seen(decision.event)
            return
        event = decision.event
        assert event is not None
        if decision.step is Step.RESUME:
            self._resume(decision)
            return
        if self.hold is None or self.hold.event.event_id != event.event_id:
            if self.hold is not None:
                log.warning(
                    "%s; the %s is next",
                    decision.why or f"the {describe(event)} is more urgent",
                    describe(event),
                )
            self.hold = Hold(event, now)
        self.hold = self.hold.seen(event)
        if decision.step is Step.WIND_DOWN:
            asking = time.monotonic()
            wound_down = self._wind_down(event)
            # Asked again ASK_AGAIN after this try ended: a Manager that makes each
            # try wait must not keep the watcher waiting most of the time.
            asked_at = now + time.monotonic() - asking
            self.hold = replace(self.hold, asked_at=asked_at, wound_down=wound_down)
        elif decision.step is Step.STOP:
            self.hold = replace(self.hold, stopping=True)
            self.holder.hold(describe(event), terminate=True)
        elif decision.step is Step.GO_AHEAD:
            self.hold = replace(self.hold, approved_at=now)
            self._go_ahead(event)

    def _wind_down(self, event: ScheduledEvent) -> bool:
        """Ask the worker to go offline once its current task is done; SIGTERM at the
        deadline remains the fallback. False: the Manager did not take the request
        (away, no credentials yet), to be asked again."""
        stop_at = _clock(deadline(event, self.margin))
        if self.status is None:
            log.info(
                "%s (NotBefore %s): the worker is stopped at %s",
                describe(event),
                _clock(event.not_before),
                stop_at,
            )
            return True
        # Held at once: a worker not running now is not started into the event.
        self.holder.hold(describe(event), terminate=False)
        if not self.status.want("event", "offline"):
            log.warning(
                "%s (NotBefore %s): the request to let the worker go offline after its "
                "current task is not known to be in force at the Manager yet; asking "
                "again in %.0f s, and the worker is stopped at %s at the latest",
                describe(event),
                _clock(event.not_before),
                ASK_AGAIN,
                stop_at,
            )
            return False
        log.info(
            "%s (NotBefore %s): the worker goes offline once its current task is "
            "done; if it is still running at %s it is stopped (SIGTERM)",
            describe(event),
            _clock(event.not_before),
            stop_at,
        )
        return True

    def _go_ahead(self, event: ScheduledEvent) -> None:
        """The worker has stopped for an event that is due (or an operator's)."""
        if event.event_type in DISK_WIPING and self.forget is not None and self.forget():
            self._forgotten = True
            if self.status is not None:
                self.status.forget()
        if self.acknowledge is None:
            return
        if not event.acknowledgeable:
            log.error(
                "%s cannot be acknowledged (the Metadata Service gave it no EventId): "
                "the platform goes ahead at its NotBefore",
                describe(event),
            )
        elif len(set(event.resources)) > 1:
            # An acknowledgement lets the event go ahead for every VM it names.
            log.info(
                "%s is not acknowledged: it concerns %d other VM(s) too, whose workers "
                "may still be stopping; the platform goes ahead at its NotBefore",
                describe(event),
                len(set(event.resources)) - 1,
            )
        else:
            self.acknowledge(event.event_id, event.event_type)

    def _resume(self, decision: Decision) -> None:
        assert decision.event is not None
        self.hold = None
        if decision.overdue:
            self.ignored.add(decision.event.event_id)
        why = decision.why
        if self._forgotten:
            why += (
                "; its entry was removed from the Manager, so the worker registers "
                "anew under the same name"
            )
            self._forgotten = False
        log.warning("%s: the worker works again", why)
        taken_back = False
        try:
            if self.status is not None:
                # Before the release: a worker started now must not sign on into
                # the pending offline.
                taken_back = self.status.want("event", None)
        finally:
            self.holder.release(told=not taken_back)
