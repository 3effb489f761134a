"""Watch Azure's Scheduled Events for the node's whole life.

A thread polls the Instance Metadata Service (``imds``) once a second, as Microsoft
recommends, and hands this VM's events (matched by ``Resources``; others are
ignored) to a reaction (``reaction.EventReaction``) after every successful poll.

One wake-up a poll, for the node's whole life: each time the thread wakes, it reads
the answer to the request it sent when it last woke (long arrived, so reading it
does not block), sends the next request, reacts, and sleeps. Waiting for an answer
as it comes would wake the thread twice a poll. The price: what the thread reacts
to is the list as it was one poll interval earlier, so an event is acted on 1 to 2
seconds after it appears instead of within 1 (a Preempt gives at least 30 s).

The first events request enables the service and can take up to two minutes to
answer: it gets ``FIRST_TIMEOUT``, later ones ``imds.TIMEOUT``. The service being
absent (not on Azure), slow or answering garbage never stops the agent: each kind of
problem is logged once, and polling backs off only up to ``BACKOFF_CAP``, so that a
30-second Preempt notice is still seen in time (and at most one request a second:
IMDS allows about five).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import Callable, Optional

from node_agent.common.errors import unexpected
from node_agent.common.log import get_logger
from node_agent.common.retry import attempt_state, backoff
from node_agent.imds import client as imds
from node_agent.imds.client import ImdsClient, ImdsProblem
from node_agent.imds.events import ScheduledEvent, parse_events

log = get_logger("preempt")

POLL = 1.0  # seconds between polls
FIRST_TIMEOUT = 120.0  # seconds for the enabling first events request
# Seconds: the longest wait between polls while IMDS misbehaves. Once it answers again
# a Preempt is acted on within two poll intervals, and IMDS's limit (about five
# requests a second) is far off.
BACKOFF_CAP = 2.0
JOIN_LIMIT = 1.0  # seconds ``stop`` waits for a request in flight

React = Callable[[Optional[list[ScheduledEvent]], float], None]


class EventWatcher:
    """Polls Scheduled Events in a thread; ``react(events, now)`` gets this VM's
    events after every successful poll, and None after a failed one. The defaults
    of the timing arguments are the module's constants, read when the watcher is
    made."""

    def __init__(
        self,
        base_url: str,
        react: React,
        *,
        poll: Optional[float] = None,
        timeout: Optional[float] = None,
        first_timeout: Optional[float] = None,
        backoff_cap: Optional[float] = None,
    ) -> None:
        self.client = ImdsClient(base_url, imds.TIMEOUT if timeout is None else timeout)
        self.react = react
        self.poll = POLL if poll is None else poll
        self.first_timeout = FIRST_TIMEOUT if first_timeout is None else first_timeout
        self.backoff_cap = BACKOFF_CAP if backoff_cap is None else backoff_cap
        self.vm_name: Optional[str] = None
        self.enabled_after: Optional[float] = None  # seconds the first answer took
        self._seen: set[str] = set()  # event ids and problem kinds already logged
        self.failures = 0  # consecutive failed polls
        self._done = False
        # The thread sleeps in one select on this pipe, which ``stop`` writes to: the
        # cheapest wait to wake from, once a second for the node's whole life.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="scheduled-events", daemon=True)

    def start(self) -> EventWatcher:
        """Start watching in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching; a request still in flight is left to its daemon thread."""
        self._done = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")
        self._thread.join(JOIN_LIMIT)
        if not self._thread.is_alive():
            self.client.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._seen:
            self._seen.add(key)
            log.warning(message, *args)

    def _events(self) -> list[ScheduledEvent]:
        """The events as last asked: the answer to the request sent at the last
        wake-up, or (none in flight: the first poll, or after a failure) asked now;
        the next request is sent before returning. The first request, which
        enables the service, may take long."""
        if self.enabled_after is None:
            started = time.monotonic()
            document = self.client.get(imds.API_EVENTS, self.first_timeout)
            self.enabled_after = time.monotonic() - started
            log.info("Scheduled Events answered (%.1f s): watching", self.enabled_after)
        elif self.client.pending:
            document = self.client.receive()
        else:
            document = self.client.get(imds.API_EVENTS)
        self.client.send(imds.API_EVENTS)
        return parse_events(document)

    def _run(self) -> None:
        while not self._done:
            mine: Optional[list[ScheduledEvent]] = None  # None: unknown (a failed poll)
            try:
                if self.vm_name is None:
                    compute = self.client.instance().get("compute", {})
                    self.vm_name = str(compute["name"])
                    log.info(
                        "watching Scheduled Events for VM %s (%s, %s priority)",
                        self.vm_name,
                        compute.get("vmSize", "?"),
                        compute.get("priority", "?"),
                    )
                mine = self._mine(self._events())
                self.failures = 0
                delay = self.poll
            except Exception as exc:  # noqa: BLE001 (watching goes on for the node's life)
                self.failures += 1
                self._problem(exc)
                delay = max(self.poll, backoff(self.backoff_cap)(attempt_state(self.failures)))
            if not self._done:  # after a failed poll too: a hold long overdue is given up
                self._react(mine)
            select.select([self._wake_r], [], [], delay)

    def _react(self, events: Optional[list[ScheduledEvent]]) -> None:
        """Hand the events on; a fault of the reaction is logged (once per kind) and
        the next poll tries again."""
        try:
            self.react(events, time.time())
        except Exception as exc:  # noqa: BLE001 (a bug must not end the watching)
            text = unexpected(exc)
            if text not in self._seen:
                self._seen.add(text)
                log.error("reacting to Scheduled Events failed (%s); watching goes on", text)

    def _problem(self, exc: Exception) -> None:
        if isinstance(exc, ImdsProblem):
            text = str(exc)
        elif isinstance(exc, (ValueError, KeyError, AttributeError, TypeError)):
            text = f"unexpected answer ({exc})"
        else:
            text = f"unexpected {unexpected(exc)}"
        if self.vm_name is None and text in ("connection refused", "cannot connect", "timeout"):
            self._once(
                "absent",
                "no Instance Metadata Service at %s (%s): not on Azure? Not watching for "
                "preemption until it answers",
                self.client.base_url,
                text,
            )
        else:
            self._once(
                text, "Instance Metadata Service: %s; backing off, the worker keeps running", text
            )

    def _mine(self, events: list[ScheduledEvent]) -> list[ScheduledEvent]:
        """This VM's events; each new one logged once."""
        mine = [e for e in events if self.vm_name in e.resources]
        for event in mine:
            key = f"{event.event_id}/{event.event_type}"
            if key not in self._seen:
                self._seen.add(key)
                log.warning(
                    "scheduled event %s for this VM: %s%s (%s)",
                    event.event_id,
                    event.event_type,
                    ", by an operator" if event.source == "User" else "",
                    event.reaction.value,
                )
                for problem in event.problems:
                    log.error("scheduled event %s for this VM: %s", event.event_id, problem)
        return mine
