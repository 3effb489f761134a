"""The Azure Instance Metadata Service, as the agent asks it: the VM's own
document, the Scheduled Events document, and the acknowledgement of an event.

Always reached directly (never through a proxy) with ``Metadata: true``; a failed
request raises ``ImdsProblem`` whose message is the kind of failure, in a few
words (``timeout``, ``HTTP 500``, ``invalid JSON``).

The standard library's ``http.client``, not ``requests``: a GET a second, for the
node's whole life, to a service on the VM's own host, over one kept connection,
needs none of what ``requests`` adds (proxies, cookies, redirects, retries) and
must cost next to nothing. A request can be sent now and its answer read later
(``send``, ``receive``): the watcher reads each poll's answer when it wakes for
the next one, so that a poll costs one wake-up, not two.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from typing import Any, Optional
from urllib.parse import urlsplit

from node_agent.log import get_logger

log = get_logger("preempt")

API_EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
API_INSTANCE = "/metadata/instance?api-version=2021-02-01"
TIMEOUT = 5.0  # seconds for one request
DRAIN = 0.1  # seconds to wait for the answer in flight when closing
HEADERS = {"Metadata": "true"}
# A kept connection the service closed between two polls fails like this; the
# request is then asked again once, on a new connection.
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class ImdsProblem(Exception):
    """One failed request to the Metadata Service; the message is its kind."""


def _kind(exc: BaseException) -> str:
    """What went wrong, in the words an operator reads in the log."""
    if isinstance(exc, socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return "cannot connect"


class ImdsClient:
    """One persistent connection to the Metadata Service at ``base_url``
    (``http://host[:port]``), used by one thread; ``acknowledge`` uses a connection
    of its own and may be called from any thread."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._host = parts.hostname or ""
        self._port = parts.port
        self.timeout = timeout
        self._connection: Optional[http.client.HTTPConnection] = None
        self._answers = 0  # answers read on the current connection
        self._sent: Optional[tuple[str, float]] = None  # path and deadline of a request

    @property
    def pending(self) -> bool:
        """Whether a request was sent whose answer is still to be read."""
        return self._sent is not None

    def close(self) -> None:
        """Close the connection; the answer to a request in flight is read first if
        it is there (a socket closed with unread data ends the connection with a
        reset, which the service may well log as an error)."""
        connection = self._connection
        if connection is not None and connection.sock is not None and self._sent is not None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection.sock.settimeout(DRAIN)
                connection.getresponse().read()
        self._drop()

    def _drop(self) -> None:
        """Close the connection at once (after a failure)."""
        if self._connection is not None:
            self._connection.close()
        self._connection, self._answers, self._sent = None, 0, None

    def instance(self) -> Any:
        """The VM's own document (``compute.name`` and more)."""
        return self.get(API_INSTANCE)

    def events(self) -> Any:
        """The Scheduled Events document."""
        return self.get(API_EVENTS)

    def get(self, path: str, timeout: Optional[float] = None) -> Any:
        """GET a document now (within ``timeout`` seconds, else the client's);
        ``ImdsProblem`` with the kind of failure."""
        if self.pending:
            self._drop()  # the answer to a request sent before is of no use now
        try:
            self._send(path, self.timeout if timeout is None else timeout)
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise ImdsProblem(_kind(exc)) from None
        return self.receive()

    def send(self, path: str) -> None:
        """Send a GET whose answer ``receive`` reads later. A failure is not raised:
        nothing is pending then, and the next ``get`` says what is wrong."""
        try:
            self._send(path, self.timeout)
        except (OSError, http.client.HTTPException):
            self._drop()

    def _send(self, path: str, timeout: float) -> None:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._sent = (path, time.monotonic() + timeout)
        self._connection.request("GET", path, headers=HEADERS)

    def receive(self) -> Any:
        """The answer to the request sent, waiting for it up to that request's
        deadline; ``ImdsProblem`` with the kind of failure."""
        assert self._connection is not None and self._sent is not None
        path, deadline = self._sent
        reused = self._answers > 0
        try:
            if self._connection.sock is not None:
                self._connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
            response = self._connection.getresponse()
            body = response.read()
        except _CLOSED:
            self._drop()
            if reused:  # closed by the service while idle: ask once more, anew
                return self.get(path)
            raise ImdsProblem("cannot connect") from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise ImdsProblem(_kind(exc)) from None
        self._sent = None
        self._answers += 1
        if response.status != 200:
            self._drop()
            raise ImdsProblem(f"HTTP {response.status}")
        try:
            return json.loads(body)
        except ValueError:
            raise ImdsProblem("invalid JSON") from None

    def acknowledge(self, event_id: str, event_type: str) -> bool:
        """Tell the platform it may go ahead with an event now (``StartRequests``);
        a failure is logged. True when the service took it."""
        body = json.dumps({"StartRequests": [{"EventId": event_id}]})
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            connection.request(
                "POST",
                API_EVENTS,
                body=body,
                headers={**HEADERS, "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            log.warning("could not acknowledge %s event %s: %s", event_type, event_id, _kind(exc))
            return False
        finally:
            connection.close()
        if response.status != 200:
            log.warning(
                "could not acknowledge %s event %s: HTTP %d",
                event_type,
                event_id,
                response.status,
            )
            return False
        log.info("acknowledged %s event %s: the platform may go ahead", event_type, event_id)
        return True
