"""Watch Azure's Scheduled Events and stop the worker before the platform does.

The Instance Metadata Service announces what will happen to the VM: ``Preempt``
(Spot eviction, at least 30 s notice) and ``Terminate`` stop the worker at once, so
it signs off and the Manager re-queues its task; ``Reboot`` and ``Redeploy`` stop it
shortly before ``NotBefore``; ``Freeze`` (a few seconds' pause) is only logged.
Events name the VMs they concern; others are ignored. The service being absent (not
on Azure), slow or answering garbage never stops the agent: each kind of problem
is logged once and polling backs off.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Callable, Optional

import requests

from node_agent.log import get_logger
from node_agent.manager import backoff, reason
from node_agent.policy import attempt_state

log = get_logger("preempt")

API_EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
API_INSTANCE = "/metadata/instance?api-version=2021-02-01"
POLL = 1.0  # seconds, as Microsoft recommends
TIMEOUT = 5.0  # seconds for one request
BACKOFF_CAP = 60.0


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
        self.base_url = base_url.rstrip("/")
        self.on_stop = on_stop
        self.margin = margin
        self.poll = poll
        self.timeout = timeout
        self.backoff_cap = backoff_cap
        self.vm_name: Optional[str] = None
        self.stopping_for: Optional[ScheduledEvent] = None
        self._seen: set[str] = set()  # event ids and problem kinds already logged
        self.failures = 0  # consecutive failed polls
        self._done = threading.Event()
        self._session = requests.Session()
        self._session.trust_env = False  # IMDS must never go through a proxy
        self._session.headers["Metadata"] = "true"
        self._prepared: dict[str, requests.PreparedRequest] = {}
        self._thread = threading.Thread(target=self._run, name="scheduled-events", daemon=True)

    def start(self) -> EventWatcher:
        """Start watching in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._done.set()
        self._thread.join(self.timeout + 1)
        self._session.close()

    def acknowledge(self, event: ScheduledEvent) -> bool:
        """Tell the platform it may go ahead now (``StartRequests``)."""
        try:
            response = self._session.post(
                self.base_url + API_EVENTS,
                json={"StartRequests": [{"EventId": event.event_id}]},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            log.warning(
                "could not acknowledge %s event %s: %s",
                event.event_type,
                event.event_id,
                reason(exc),
            )
            return False
        if response.status_code != 200:
            log.warning(
                "could not acknowledge %s event %s: HTTP %d",
                event.event_type,
                event.event_id,
                response.status_code,
            )
            return False
        log.info(
            "acknowledged %s event %s: the platform may go ahead", event.event_type, event.event_id
        )
        return True

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._seen:
            self._seen.add(key)
            log.warning(message, *args)

    def _get(self, path: str) -> Any:
        """GET a document; ``_Problem`` with the kind of failure.

        The request is prepared once and sent straight through the session's
        adapter: a poll a second for the node's whole life must cost next to
        nothing, and a fixed GET to a local service needs no per-call merging of
        settings, cookies, hooks or redirects (half of requests' CPU per call).
        """
        prepared = self._prepared.get(path)
        if prepared is None:
            prepared = self._session.prepare_request(requests.Request("GET", self.base_url + path))
            self._prepared[path] = prepared
        try:
            response = self._session.get_adapter(prepared.url or "").send(
                prepared, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise _Problem(reason(exc)) from None
        if response.status_code != 200:
            raise _Problem(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise _Problem("invalid JSON") from None

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                if self.vm_name is None:
                    compute = self._get(API_INSTANCE).get("compute", {})
                    self.vm_name = str(compute["name"])
                    log.info(
                        "watching Scheduled Events for VM %s (%s, %s priority)",
                        self.vm_name,
                        compute.get("vmSize", "?"),
                        compute.get("priority", "?"),
                    )
                self._check(parse_events(self._get(API_EVENTS)))
                self.failures = 0
                delay = self.poll
            except (_Problem, ValueError, KeyError, AttributeError) as exc:
                self.failures += 1
                text = str(exc) if isinstance(exc, _Problem) else f"unexpected answer ({exc})"
                if self.vm_name is None and text in (
                    "connection refused",
                    "cannot connect",
                    "timeout",
                ):
                    self._once(
                        "absent",
                        "no Instance Metadata Service at %s (%s): not on "
                        "Azure? Not watching for preemption until it answers",
                        self.base_url,
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


class _Problem(Exception):
    """One failed request to the Metadata Service; the message is its kind."""
