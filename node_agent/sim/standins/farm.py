"""What the stand-in Flamenco Manager knows: workers, tags, jobs and tasks, and the
rules the real Manager 3.x applies to them (``internal/manager/api_impl``: workers.go,
worker_mgt.go, worker_task_updates.go). Plain data and plain methods, no HTTP:
``standins.manager`` serves this over the real API. A refused operation raises
``FarmError`` with the HTTP status and message the real Manager answers.

Modelled: registration (a new worker every time, status ``""`` until it signs on),
secrets kept only as salted hashes, sign-on (``starting``, then the requested status,
else ``awake``), status requests that stay pending until acknowledged or, for
``offline``/``restart``, cleared at sign-off (sign-off remembers ``awake``/``asleep``
for the next sign-on), lazy requests, soft delete, tags, and a task queue: queued ->
active (assigned) -> completed/failed, active tasks requeued when their worker signs
off, stops being awake or is deleted; the jobs API's queries (``farm_queue``). Not
modelled: sleep schedules, timeouts, blocklists, soft failures, job compilation,
failing or pausing jobs.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from node_agent.sim.standins.farm_model import (
    TASK_STATUSES,
    WORKER_STATUSES,
    FarmError,
    Job,
    StatusChangeRequested,
    Tag,
    Task,
    Worker,
    secret_hash,
    valid_uuid,
)
from node_agent.sim.standins.farm_queue import TaskQueue

__all__ = [
    "TASK_STATUSES",
    "WORKER_STATUSES",
    "Farm",
    "FarmError",
    "Job",
    "StatusChangeRequested",
    "Tag",
    "Task",
    "Worker",
    "valid_uuid",
]

# Statuses a worker signing off is sent back to at its next sign-on.
_REMEMBERED = ("awake", "asleep")
# Status requests that sign-off counts as acknowledged.
_CLEARED_AT_SIGN_OFF = ("offline", "restart")


class Farm(TaskQueue):
    """The Manager's database, with its rules. Not thread-safe: the caller locks."""

    def __init__(self) -> None:
        super().__init__()
        self.workers: dict[str, Worker] = {}
        self.tags: dict[str, Tag] = {}

    # -- the worker API -------------------------------------------------------

    def register(self, body: Any) -> Worker:
        """``register-worker``: always a new worker (400 for an invalid body)."""
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("name", "platform", "secret")
        ):
            raise FarmError(400, "invalid format")
        types = body.get("supported_task_types")
        if not isinstance(types, list):
            raise FarmError(400, "invalid format")
        salt = os.urandom(16)
        worker = Worker(
            id=str(uuid.uuid4()),
            name=body["name"],
            platform=body["platform"],
            supported_task_types=[str(t) for t in types],
            salt=salt,
            secret_hash=secret_hash(salt, body["secret"]),
        )
        self.workers[worker.id] = worker
        return worker

    def authenticate(self, worker_id: str, secret: str) -> Worker:
        """The worker behind HTTP Basic credentials; 403 for unknown, deleted or a
        wrong secret, all alike (``worker_auth.go``, ``WorkerAuth``: ``errAuthBad``,
        wrapped by kin-openapi as the message says)."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.deleted or not worker.secret_matches(secret):
            raise FarmError(
                403, "security requirements failed: authorization failed: no such worker known"
            )
        worker.last_seen = time.time()
        return worker

    def sign_on(self, worker: Worker, body: Any) -> str:
        """``sign-on``: the worker is ``starting``; returns the status it must go to."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise FarmError(400, "invalid format")
        worker.status = "starting"
        worker.name = body["name"]
        worker.software = str(body.get("software_version", ""))
        worker.can_restart = bool(body.get("can_restart"))
        worker.supported_task_types = [
            str(t).strip().lower() for t in body.get("supported_task_types") or []
        ]
        return worker.status_requested or "awake"

    def sign_off(self, worker: Worker) -> None:
        """``sign-off``: offline; its task is requeued."""
        previous = worker.status
        worker.status = "offline"
        if worker.status_requested in _CLEARED_AT_SIGN_OFF:
            worker.request("", False)
        if not worker.status_requested and previous in _REMEMBERED:
            worker.request(previous, False)
        self._requeue(worker)

    def state_changed(self, worker: Worker, body: Any) -> None:
        """``state-changed``: acknowledges a matching request."""
        status = body.get("status") if isinstance(body, dict) else None
        if status not in WORKER_STATUSES:
            raise FarmError(400, "invalid format")
        previous = worker.status
        worker.status = status
        if not worker.status_requested or worker.status_requested == status:
            worker.request("", False)
        if previous == "awake" and status != "awake":
            self._requeue(worker)

    # -- worker management (the web interface's API) --------------------------

    def live(self, worker_id: str) -> Worker:
        """A worker that is not deleted: 400 for a non-UUID id, 404 for no such one."""
        if not valid_uuid(worker_id):
            raise FarmError(400, "not a valid UUID")
        worker = self.workers.get(worker_id)
        if worker is None or worker.deleted:
            raise FarmError(404, f'worker "{worker_id}" not found')
        return worker

    def listing(self) -> list[dict[str, Any]]:
        """``WorkerList``: summaries of the workers not deleted."""
        return [w.summary() for w in self.workers.values() if not w.deleted]

    def details(self, worker_id: str) -> dict[str, Any]:
        """``Worker``: the summary plus platform, task types and tags."""
        worker = self.live(worker_id)
        document = worker.summary()
        document.update(
            ip_address="127.0.0.1",
            platform=worker.platform,
            supported_task_types=list(worker.supported_task_types),
        )
        task = self.worker_task(worker)
        if task is not None:
            document["task"] = task
        if worker.tag_ids:
            document["tags"] = [self.tags[t].document() for t in worker.tag_ids]
        return document

    def delete(self, worker_id: str) -> None:
        """Soft delete: the entry disappears, its credentials stop working (403), its
        tasks are requeued."""
        worker = self.live(worker_id)
        self._requeue(worker)
        worker.deleted = True

    def request_status(self, worker_id: str, body: Any) -> None:
        """``setstatus``: 412 for ``restart`` to a worker that cannot restart; the
        worker's own status clears any pending request."""
        worker = self.live(worker_id)
        if (
            not isinstance(body, dict)
            or body.get("status") not in WORKER_STATUSES
            or not isinstance(body.get("is_lazy"), bool)
        ):
            raise FarmError(400, "invalid format")
        if body["status"] == "restart" and not worker.can_restart:
            raise FarmError(412, f'worker "{worker_id}" does not know how to restart')
        if body["status"] == worker.status:
            worker.request("", False)
        else:
            worker.request(body["status"], body["is_lazy"])

    def set_tags(self, worker_id: str, body: Any) -> None:
        """``settags``: the worker's tags become exactly the known ones of these. An
        unknown tag id is dropped, not refused: the Manager looks the ids up with
        ``FetchWorkerTagsByUUIDs`` and assigns the tags found (``worker_mgt.go``,
        ``SetWorkerTags``; ``persistence/worker_tag.go``, ``WorkerSetTags``)."""
        worker = self.live(worker_id)
        ids = body.get("tag_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise FarmError(400, "invalid format")
        worker.tag_ids = [tag_id for tag_id in dict.fromkeys(ids) if tag_id in self.tags]
