"""A stand-in Azure Instance Metadata Service: instance document, Scheduled Events
that a test can change while it runs, acknowledgements recorded, and the ways of the
real one: the first events request enables the service and answers late
(``first_delay``), an event is ``Started`` (its NotBefore gone) once acknowledged or
once its NotBefore has passed, events can be cancelled (they leave the list) or
changed (a Reboot turning into a Freeze), each says its ``EventSource``; and its
failure modes (400 without ``Metadata: true``, 429, 500, garbage, hangs)."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, Optional

from node_agent.sim.standins.server import Request, Response, StandinServer

EVENTS_PATH = "/metadata/scheduledevents"
INSTANCE_PATH = "/metadata/instance"


def not_before(seconds: float) -> str:
    """A NotBefore this many seconds from now, as the service writes it."""
    return formatdate(time.time() + seconds, usegmt=True)


class FakeImds:
    """The Metadata Service of one VM named ``vm_name``."""

    def __init__(
        self,
        vm_name: str = "vm-under-test",
        priority: str = "Spot",
        port: int = 0,
        first_delay: float = 0.0,
    ) -> None:
        self.vm_name = vm_name
        self.priority = priority
        self.first_delay = first_delay  # seconds the enabling first events request takes
        self.incarnation = 1
        self.events: list[dict[str, Any]] = []
        self.failure: Optional[str] = None  # "400", "429", "500", "garbage", "hang"
        self._release = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._enabled_at: Optional[float] = None  # monotonic; set by the first request
        self.waited = 0  # events requests that had to wait for the service to be enabled
        self.server = StandinServer(self._handle, port)

    @property
    def url(self) -> str:
        """The base URL to give node-agent as ``NODE_AGENT_IMDS_URL``."""
        return self.server.url

    def start(self) -> FakeImds:
        """Serve in the background."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving (a hanging or slow request is released first)."""
        self._release.set()
        self._closing.set()
        self.server.stop()

    def schedule(
        self,
        event_type: str,
        event_id: str = "EVT-1",
        resources: Optional[list[str]] = None,
        not_before: str = "",
        source: str = "Platform",
    ) -> None:
        """Announce an event (for this VM unless ``resources`` says otherwise);
        ``source`` ``User`` for an operator's."""
        with self._lock:
            self.events.append(
                {
                    "EventId": event_id,
                    "EventType": event_type,
                    "ResourceType": "VirtualMachine",
                    "Resources": [self.vm_name] if resources is None else resources,
                    "EventStatus": "Scheduled",
                    "NotBefore": not_before,
                    "Description": f"stand-in {event_type}",
                    "EventSource": source,
                    "DurationInSeconds": -1,
                }
            )
            self.incarnation += 1

    def cancel(self, event_id: str) -> None:
        """Call an event off: it leaves the list."""
        with self._lock:
            self.events = [e for e in self.events if e["EventId"] != event_id]
            self.incarnation += 1

    def change(self, event_id: str, **fields: Any) -> None:
        """Change an event's fields (``EventType="Freeze"``: a Reboot turning into a
        Freeze)."""
        with self._lock:
            for event in self.events:
                if event["EventId"] == event_id:
                    event.update(fields)
            self.incarnation += 1

    def fail(self, mode: Optional[str]) -> None:
        """Answer every request with a failure mode from now on (None: heal)."""
        self.failure = mode
        if mode != "hang":
            self._release.set()
        else:
            self._release.clear()

    def acknowledged(self) -> list[str]:
        """The EventIds acknowledged so far, in order."""
        return [
            item["EventId"]
            for request in self.server.received("POST", EVENTS_PATH)
            for item in request.json().get("StartRequests", [])
        ]

    def _handle(self, request: Request) -> Optional[Response]:
        if request.headers.get("Metadata") != "true":
            return Response(400, {"error": "Bad request. Required metadata header not specified"})
        failure = self.failure
        if failure == "hang":
            self._release.wait(30)
            return None
        if failure in ("400", "429", "500"):
            return Response(int(failure), {"error": f"stand-in {failure}"})
        if failure == "garbage":
            return Response(200, b"<html>not json")
        if request.path.startswith(INSTANCE_PATH):
            return Response(
                200,
                {
                    "compute": {
                        "name": self.vm_name,
                        "vmSize": "Standard_D4s_v5",
                        "location": "westeurope",
                        "priority": self.priority,
                        "evictionPolicy": "Delete",
                    }
                },
            )
        if request.path.startswith(EVENTS_PATH):
            self._enable()
            with self._lock:
                if request.method == "POST":
                    self._start([r.get("EventId") for r in request.json().get("StartRequests", [])])
                    return Response(200)
                self._start([e["EventId"] for e in self.events if _due(e)])
                document = {
                    "DocumentIncarnation": self.incarnation,
                    "Events": [dict(e) for e in self.events],
                }
            return Response(200, document)
        return Response(404, {"error": "not found"})

    def _enable(self) -> None:
        """The first events request enables the service: every request until then
        waits (the real one can take two minutes)."""
        with self._lock:
            if self._enabled_at is None:
                self._enabled_at = time.monotonic() + self.first_delay
            wait = self._enabled_at - time.monotonic()
            self.waited += wait > 0
        if wait > 0:
            self._closing.wait(wait)

    def _start(self, event_ids: list[Any]) -> None:
        """These events start: ``Started``, their NotBefore gone (lock held)."""
        for event in self.events:
            if event["EventId"] in event_ids and event["EventStatus"] != "Started":
                event.update(EventStatus="Started", NotBefore="")
                self.incarnation += 1


def _due(event: dict[str, Any]) -> bool:
    """Whether an event's NotBefore has passed (one a test garbled never is)."""
    try:
        return parsedate_to_datetime(event["NotBefore"]).timestamp() <= time.time()
    except (TypeError, ValueError):
        return False
