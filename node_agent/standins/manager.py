"""A stand-in Flamenco v3 Manager: the API a worker and node-agent use, every
request recorded, and a way to ask the worker to restart or shut down."""

from __future__ import annotations

import base64
import re
import threading
import uuid
from typing import Optional

from node_agent.standins.server import Request, Response, StandinServer

API = "/api/v3"


class FakeManager:
    """Knows workers by id; answers like Flamenco Manager 3.x."""

    def __init__(self, port: int = 0) -> None:
        self.workers: dict[str, dict[str, object]] = {}
        self._requests: dict[str, str] = {}  # worker id -> status to deliver once
        self._lock = threading.Lock()
        self.server = StandinServer(self._handle, port)

    @property
    def url(self) -> str:
        """The Manager URL for ``FLAMENCO_MANAGER_URL``."""
        return self.server.url + "/"

    def start(self) -> FakeManager:
        """Serve in the background."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()

    def ask(self, status: str) -> None:
        """Ask every registered worker for a state ("restart" or "offline"), delivered
        once, at its next state poll."""
        with self._lock:
            self._requests.update((worker_id, status) for worker_id in self.workers)

    def registered_names(self) -> list[str]:
        """The names of every registration so far, in order."""
        return [r.json()["name"] for r in self.server.received("POST", f"{API}/worker/register")]

    def _worker_id(self, request: Request) -> Optional[str]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        worker_id, _, _ = base64.b64decode(auth[6:]).decode().partition(":")
        return worker_id if worker_id in self.workers else None

    def _handle(self, request: Request) -> Optional[Response]:
        path = request.path.split("?")[0]
        if request.method == "GET" and path == f"{API}/version":
            return Response(
                200,
                {
                    "version": "3.6-standin",
                    "shortversion": "3.6",
                    "name": "Flamenco (stand-in)",
                    "git": "standin",
                },
            )
        if request.method == "POST" and path == f"{API}/worker/register-worker":
            body = request.json()
            worker_id = str(uuid.uuid4())
            with self._lock:
                self.workers[worker_id] = {
                    "name": body["name"],
                    "status": "offline",
                    "secret": body.get("secret", ""),
                }
            return Response(
                200,
                {
                    "uuid": worker_id,
                    "name": body["name"],
                    "address": "127.0.0.1",
                    "platform": body.get("platform"),
                    "software": "",
                    "status": "offline",
                    "supported_task_types": body.get("supported_task_types"),
                },
            )
        if path == f"{API}/worker-mgt/workers" and request.method == "GET":
            return Response(200, {"workers": [{"id": k, **v} for k, v in self.workers.items()]})
        match = re.fullmatch(rf"{API}/worker-mgt/workers/([^/]+)", path)
        if match and request.method == "DELETE":
            with self._lock:
                found = self.workers.pop(match.group(1), None)
            return Response(204) if found else Response(404, {"message": "no such worker"})
        if path.startswith(f"{API}/worker/"):
            known = self._worker_id(request)
            if known is None:
                return Response(401, {"message": "unknown worker"})
            worker_id = known
            action = path[len(f"{API}/worker/") :]
            if action == "sign-on":
                self.workers[worker_id]["status"] = "awake"
                return Response(200, {"status_requested": ""})
            if action == "sign-off":
                self.workers[worker_id]["status"] = "offline"
                return Response(204)
            if action == "state":
                with self._lock:
                    status = self._requests.pop(worker_id, "")
                return Response(200, {"status_requested": status}) if status else Response(204)
            if action in ("state-changed", "task"):
                return Response(204)
        return Response(404, {"message": f"stand-in has no {request.method} {path}"})
