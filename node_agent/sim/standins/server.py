"""A threaded HTTP server on 127.0.0.1 that records every request."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Request:
    """One request a stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Response:
    """What a stand-in answers."""

    status: int
    body: Any = None  # JSON-encoded unless bytes
    headers: tuple[tuple[str, str], ...] = ()  # sent besides Content-Type and -Length
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        """The body as bytes."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Optional[Response]]
# A client that went away mid-request (a node killed, a test that gave up): what a
# real server shrugs off, not a fault of the stand-in.
GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, socket.timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that went away; one line, no traceback, for the rest
        (socketserver prints a whole traceback for either)."""
        error = sys.exc_info()[1]
        if isinstance(error, GONE):
            return
        print(
            f"stand-in server: request from {client_address[0]} failed: "
            f"{type(error).__name__}: {error}",
            file=sys.stderr,
        )


class StandinServer:
    """Serves ``handle(request)`` on 127.0.0.1; ``port=0`` picks a free port. A
    handler returning None drops the connection without an answer. With ``tls`` (a
    server-side ``ssl.SSLContext``) it serves HTTPS."""

    def __init__(
        self, handle: Handler, port: int = 0, tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: without this, Nagle's
            # algorithm and the client's delayed ACK add 40 ms to every answer.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    self.rfile.read(length) if length else b"",
                    time.time(),
                )
                with outer._lock:
                    outer.requests.append(request)
                response = handle(request)
                if response is None:
                    self.close_connection = True
                    return
                body = response.encoded()
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in response.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the recorded requests are the log."""

        self._handler_class = _Handler
        self._port = port
        self._tls = tls
        self._server: Optional[_Server] = None

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, until it is started)."""
        return int(self._server.server_address[1]) if self._server else self._port

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> StandinServer:
        """Bind the port (not before: a stand-in that is not started must refuse
        connections, as a server that is down does) and serve in the background."""
        self._server = _Server(("127.0.0.1", self._port), self._handler_class)
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self, method: str, path_prefix: str) -> list[Request]:
        """The requests so far with this method whose path starts with the prefix."""
        with self._lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]
