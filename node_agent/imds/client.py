"""The Azure Instance Metadata Service, as the agent asks it: the VM's own
document, the Scheduled Events document, and the acknowledgement of an event.

Always reached directly (never through a proxy) with ``Metadata: true``; a failed
request raises ``ImdsProblem`` whose message is the kind of failure, in a few
words (``timeout``, ``HTTP 500``, ``invalid JSON``).

A GET a second for the node's whole life, to a service on the VM's own host, must
cost next to nothing: over one kept connection, a request made once per path is
sent as bytes, and the answer is read by ``read_answer`` (status line, the headers
that frame the body, the body). ``requests`` adds what this needs none of
(proxies, cookies, redirects) at 0.25 ms a poll, and ``http.client`` parses every
answer's headers with the ``email`` package at as much again: more than a quiet
agent may spend in all. And an answer that is the last one again but for its
``Date`` (no event: the rule) is not parsed again. A request can be sent now and
its answer read later (``send``, ``receive``): the watcher reads each poll's
answer when it wakes for the next one, so that a poll costs one wake-up, not two.
The rare acknowledgement goes through ``http.client``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import time
from typing import Any, NamedTuple, Optional, Protocol
from urllib.parse import urlsplit

from node_agent.common.log import get_logger

log = get_logger("imds")

API_EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
API_INSTANCE = "/metadata/instance?api-version=2021-02-01"
TIMEOUT = 5.0  # seconds for one request
DRAIN = 0.1  # seconds to wait for the answer in flight when closing
MAX_LINE = 65536  # bytes: longer status or header lines are not the service's
MAX_HEADERS = 100
RECEIVE = 65536  # bytes asked of one receive: a whole answer, as a rule
# An answer is the last one again, but for its Date, more often than not.
_DATE = re.compile(rb"\r\ndate:[^\r\n]*", re.IGNORECASE)


class ImdsProblem(Exception):
    """One failed request to the Metadata Service; the message is its kind."""


class Closed(ConnectionError):
    """The service closed the connection before answering."""


class Answer(NamedTuple):
    """An HTTP answer: its status, body, and whether the connection stays open."""

    status: int
    body: bytes
    keep: bool


class Reader(Protocol):
    """What ``read_answer`` reads from."""

    def readline(self, limit: int = -1, /) -> bytes: ...

    def read(self, size: int = -1, /) -> bytes: ...


def read_answer(reader: Reader) -> Answer:
    """Read one HTTP/1.x answer from ``reader``: ``Closed`` at end of file before it,
    ``ValueError`` for what is not HTTP."""
    line = reader.readline(MAX_LINE)
    if not line:
        raise Closed("closed before answering")
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ValueError("not an HTTP answer")
    keep, length, chunked = version == b"HTTP/1.1", None, False
    for _ in range(MAX_HEADERS):
        line = reader.readline(MAX_LINE)
        if line in (b"\r\n", b"\n"):
            break
        if not line.endswith(b"\n"):
            raise Closed("closed within the headers")
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            keep = value == b"keep-alive" or (keep and value != b"close")
    else:
        raise ValueError("too many headers")
    if chunked:
        body = b"".join(iter(lambda: _chunk(reader), b""))
    elif length is not None:
        body = reader.read(length)
        if len(body) < length:
            raise Closed("closed within the body")
    else:  # the body ends with the connection
        body, keep = reader.read(), False
    return Answer(int(code), body, keep)


def _chunk(reader: Reader) -> bytes:
    """The next chunk of a chunked body (b"" after the last, trailers read)."""
    size = int(reader.readline(MAX_LINE).split(b";")[0], 16)
    if size == 0:
        while reader.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
            pass
        return b""
    data = reader.read(size)
    reader.readline(MAX_LINE)
    if len(data) < size:
        raise Closed("closed within the body")
    return data


def _kind(exc: BaseException) -> str:
    """What went wrong, in the words an operator reads in the log."""
    if isinstance(exc, socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return "cannot connect"


class SocketReader:
    """``readline`` and ``read`` over a socket's ``recv``, keeping what was received
    and not read yet (``buffer``); ``fills`` counts the receives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fills = 0

    def fill(self) -> bool:
        """Receive what is there (waiting up to the socket's timeout); False at end."""
        chunk = self.sock.recv(RECEIVE)
        self.fills += 1
        self.buffer += chunk
        return bool(chunk)

    def readline(self, limit: int = -1) -> bytes:
        """A line with its newline (at most ``limit`` bytes; less at the end)."""
        searched = 0
        while True:
            end = self.buffer.find(b"\n", searched)
            if end >= 0:
                end += 1
                break
            searched = len(self.buffer)
            if 0 <= limit <= searched or not self.fill():
                end = len(self.buffer)
                break
        if 0 <= limit < end:
            end = limit
        line, self.buffer = self.buffer[:end], self.buffer[end:]
        return line

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (all until the end when -1; less at the end)."""
        while (size < 0 or len(self.buffer) < size) and self.fill():
            pass
        size = len(self.buffer) if size < 0 else size
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


class ImdsClient:
    """One persistent connection to the Metadata Service at ``base_url``
    (``http://host[:port]``), used by one thread; ``acknowledge`` uses a connection
    of its own and may be called from any thread."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._host = parts.hostname or ""
        self._port = parts.port or 80
        self._authority = parts.netloc
        self.timeout = timeout
        self._socket: Optional[socket.socket] = None
        self._reader: Optional[SocketReader] = None
        self._last: tuple[bytes, Any] = (b"", None)  # the last answer (Date left out), parsed
        self._requests: dict[str, bytes] = {}
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
        if self._socket is not None and self._reader is not None and self._sent is not None:
            with contextlib.suppress(OSError, ValueError):
                self._socket.settimeout(DRAIN)
                read_answer(self._reader)
        self._drop()

    def _drop(self) -> None:
        """Close the connection at once (after a failure)."""
        if self._socket is not None:
            self._socket.close()
        self._socket, self._reader, self._answers, self._sent = None, None, 0, None

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
        except OSError as exc:
            self._drop()
            raise ImdsProblem(_kind(exc)) from None
        return self.receive()

    def send(self, path: str) -> None:
        """Send a GET whose answer ``receive`` reads later. A failure is not raised:
        nothing is pending then, and the next ``get`` says what is wrong."""
        try:
            self._send(path, self.timeout)
        except OSError:
            self._drop()

    def _send(self, path: str, timeout: float) -> None:
        request = self._requests.get(path)
        if request is None:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {self._authority}\r\nMetadata: true\r\n"
                "Accept: application/json\r\nUser-Agent: node-agent\r\n\r\n"
            ).encode()
            self._requests[path] = request
        if self._socket is None:
            self._socket = socket.create_connection((self._host, self._port), timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._reader = SocketReader(self._socket)
        self._sent = (path, time.monotonic() + timeout)
        self._socket.sendall(request)

    def receive(self) -> Any:
        """The answer to the request sent, waiting for it up to that request's
        deadline; ``ImdsProblem`` with the kind of failure."""
        assert self._socket is not None and self._reader is not None and self._sent
        path, deadline = self._sent
        reused = self._answers > 0
        reader = self._reader
        try:
            self._socket.settimeout(max(0.001, deadline - time.monotonic()))
            if not reader.buffer:
                reader.fill()
            received, fills = reader.buffer, reader.fills
            key = _DATE.sub(b"", received)
            if received and key == self._last[0]:  # as last time: nothing to parse
                reader.buffer, self._sent = b"", None
                self._answers += 1
                return self._last[1]
            answer = read_answer(reader)
        except (Closed, ConnectionResetError, BrokenPipeError):
            self._drop()
            if reused:  # closed by the service while idle: ask once more, anew
                return self.get(path)
            raise ImdsProblem("cannot connect") from None
        except (OSError, ValueError) as exc:
            self._drop()
            raise ImdsProblem(_kind(exc)) from None
        self._sent = None
        self._answers += 1
        if not answer.keep or answer.status != 200:
            self._drop()
        if answer.status != 200:
            raise ImdsProblem(f"HTTP {answer.status}")
        try:
            document = json.loads(answer.body)
        except ValueError:
            raise ImdsProblem("invalid JSON") from None
        if answer.keep and reader.fills == fills and not reader.buffer:
            self._last = (key, document)  # the answer came whole in one receive
        return document

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
                headers={"Metadata": "true", "Content-Type": "application/json"},
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
