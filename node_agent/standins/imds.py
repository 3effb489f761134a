"""A stand-in Azure Instance Metadata Service: instance document, Scheduled Events
that a test can change while it runs, acknowledgements recorded, and the failure
modes of the real one (400 without ``Metadata: true``, 429, 500, garbage, hangs)."""

from __future__ import annotations

import threading
from typing import Any, Optional

from node_agent.standins.server import Request, Response, StandinServer

EVENTS_PATH = "/metadata/scheduledevents"
INSTANCE_PATH = "/metadata/instance"


class FakeImds:
    """The Metadata Service of one VM named ``vm_name``."""

    def __init__(
        self, vm_name: str = "vm-under-test", priority: str = "Spot", port: int = 0
    ) -> None:
        self.vm_name = vm_name
        self.priority = priority
        self.incarnation = 1
        self.events: list[dict[str, Any]] = []
        self.failure: Optional[str] = None  # "400", "429", "500", "garbage", "hang"
        self._release = threading.Event()
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
        """Stop serving (a hanging request is released first)."""
        self._release.set()
        self.server.stop()

    def schedule(
        self,
        event_type: str,
        event_id: str = "EVT-1",
        resources: Optional[list[str]] = None,
        not_before: str = "",
    ) -> None:
        """Announce an event (for this VM unless ``resources`` says otherwise)."""
        self.events.append(
            {
                "EventId": event_id,
                "EventType": event_type,
                "ResourceType": "VirtualMachine",
                "Resources": [self.vm_name] if resources is None else resources,
                "EventStatus": "Scheduled",
                "NotBefore": not_before,
                "Description": f"stand-in {event_type}",
                "EventSource": "Platform",
                "DurationInSeconds": -1,
            }
        )
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
            if request.method == "POST":
                return Response(200)
            return Response(
                200, {"DocumentIncarnation": self.incarnation, "Events": list(self.events)}
            )
        return Response(404, {"error": "not found"})
