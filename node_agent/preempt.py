"""Watch Azure's Scheduled Events and stop the worker before the platform does.

A thread polls the Instance Metadata Service (``imds``) once a second and stops the
worker for the first event of this VM that requires it (``events`` decides). Events
name the VMs they concern; others are ignored. The service being absent (not on
Azure), slow or answering garbage never stops the agent: each kind of problem is
logged once and polling backs off.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from node_agent.events import ScheduledEvent, due, parse_events
from node_agent.imds import TIMEOUT, ImdsClient, ImdsProblem
from node_agent.log import get_logger
from node_agent.manager import backoff
from node_agent.policy import attempt_state

log = get_logger("preempt")

POLL = 1.0  # seconds, as Microsoft recommends
BACKOFF_CAP = 60.0


class EventWatcher:
    """Polls Scheduled Events in a thread; calls ``on_stop(event)`` once, for the
    first event that requires the worker to stop."""

    def __init__(
        self,
        base_url: str,
        on_stop: Callable[[ScheduledEvent], None],
        *,
        margin: float,
        poll: float = POLL,
        timeout: float = TIMEOUT,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.client = ImdsClient(base_url, timeout)
        self.on_stop = on_stop
        self.margin = margin
        self.poll = poll
        self.backoff_cap = backoff_cap
        self.vm_name: Optional[str] = None
        self.stopping_for: Optional[ScheduledEvent] = None
        self._seen: set[str] = set()  # event ids and problem kinds already logged
        self.failures = 0  # consecutive failed polls
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduled-events", daemon=True)

    def start(self) -> EventWatcher:
        """Start watching in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._done.set()
        self._thread.join(self.client.timeout + 1)
        self.client.close()

    def acknowledge(self, event: ScheduledEvent) -> bool:
        """Tell the platform it may go ahead now (``StartRequests``)."""
        return self.client.acknowledge(event.event_id, event.event_type)

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._seen:
            self._seen.add(key)
            log.warning(message, *args)

    def _run(self) -> None:
        while not self._done.is_set():
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
                self._check(parse_events(self.client.events()))
                self.failures = 0
                delay = self.poll
            except (ImdsProblem, ValueError, KeyError, AttributeError) as exc:
                self.failures += 1
                text = str(exc) if isinstance(exc, ImdsProblem) else f"unexpected answer ({exc})"
                if self.vm_name is None and text in (
                    "connection refused",
                    "cannot connect",
                    "timeout",
                ):
                    self._once(
                        "absent",
                        "no Instance Metadata Service at %s (%s): not on "
                        "Azure? Not watching for preemption until it answers",
                        self.client.base_url,
                        text,
                    )
                else:
                    self._once(
                        text,
                        "Instance Metadata Service: %s; backing off, the worker keeps running",
                        text,
                    )
                delay = max(self.poll, backoff(self.backoff_cap)(attempt_state(self.failures)))
            if self.stopping_for is not None:
                return
            self._done.wait(delay)

    def _check(self, events: list[ScheduledEvent]) -> None:
        now = time.time()
        for event in events:
            if self.vm_name not in event.resources:
                continue
            if event.event_id not in self._seen:
                self._seen.add(event.event_id)
                log.warning(
                    "scheduled event %s for this VM: %s (%s)",
                    event.event_id,
                    event.event_type,
                    event.reaction.value,
                )
            if due(event, now, self.margin):
                self.stopping_for = event
                self.on_stop(event)
                return
