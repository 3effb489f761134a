"""The Azure Instance Metadata Service, as the agent asks it: the VM's own
document, the Scheduled Events document, and the acknowledgement of an event.

Always reached directly (never through a proxy) with ``Metadata: true``; a failed
request raises ``ImdsProblem`` whose message is the kind of failure, in a few
words (``timeout``, ``HTTP 500``, ``invalid JSON``).
"""

from __future__ import annotations

from typing import Any, Optional

import requests

from node_agent.log import get_logger
from node_agent.manager import reason

log = get_logger("preempt")

API_EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
API_INSTANCE = "/metadata/instance?api-version=2021-02-01"
TIMEOUT = 5.0  # seconds for one request


class ImdsProblem(Exception):
    """One failed request to the Metadata Service; the message is its kind."""


class ImdsClient:
    """One persistent connection to the Metadata Service at ``base_url``."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # IMDS must never go through a proxy
        self._session.headers["Metadata"] = "true"
        self._prepared: dict[str, requests.PreparedRequest] = {}

    def close(self) -> None:
        """Close the connection."""
        self._session.close()

    def instance(self) -> Any:
        """The VM's own document (``compute.name`` and more)."""
        return self.get(API_INSTANCE)

    def events(self) -> Any:
        """The Scheduled Events document."""
        return self.get(API_EVENTS)

    def get(self, path: str, timeout: Optional[float] = None) -> Any:
        """GET a document (within ``timeout`` seconds, else the client's);
        ``ImdsProblem`` with the kind of failure.

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
                prepared, timeout=self.timeout if timeout is None else timeout
            )
        except requests.RequestException as exc:
            raise ImdsProblem(reason(exc)) from None
        if response.status_code != 200:
            raise ImdsProblem(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ImdsProblem("invalid JSON") from None

    def acknowledge(self, event_id: str, event_type: str) -> bool:
        """Tell the platform it may go ahead with an event now (``StartRequests``);
        a failure is logged. True when the service took it."""
        try:
            response = self._session.post(
                self.base_url + API_EVENTS,
                json={"StartRequests": [{"EventId": event_id}]},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            log.warning("could not acknowledge %s event %s: %s", event_type, event_id, reason(exc))
            return False
        if response.status_code != 200:
            log.warning(
                "could not acknowledge %s event %s: HTTP %d",
                event_type,
                event_id,
                response.status_code,
            )
            return False
        log.info("acknowledged %s event %s: the platform may go ahead", event_type, event_id)
        return True
