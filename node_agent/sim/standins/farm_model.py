"""The stand-in Flamenco Manager's records: workers, tags, jobs and tasks as its
database holds them, and the errors its rules raise (``standins.farm`` and
``standins.farm_queue`` hold the rules)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

WORKER_STATUSES = ("starting", "awake", "asleep", "error", "testing", "offline", "restart")
TASK_STATUSES = ("active", "canceled", "completed", "failed", "queued", "soft-failed", "paused")


class FarmError(Exception):
    """The Manager refuses: ``code`` is the HTTP status, ``message`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StatusChangeRequested(Exception):
    """A worker asking for a task must first go to ``status`` (HTTP 423)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def stamp(when: float) -> str:
    """A time as the Manager sends it (RFC 3339, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def valid_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID, as the Manager checks ids in paths."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def secret_hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


@dataclass
class Worker:
    """One registered worker. Only a salted hash of its secret is kept."""

    id: str
    name: str
    platform: str
    supported_task_types: list[str]
    salt: bytes = field(repr=False)
    secret_hash: bytes = field(repr=False)
    status: str = ""  # a registered worker has no status until it signs on
    software: str = ""
    can_restart: bool = False
    status_requested: str = ""
    lazy: bool = False
    last_seen: Optional[float] = None
    deleted: bool = False
    tag_ids: list[str] = field(default_factory=list)

    def secret_matches(self, secret: str) -> bool:
        """Constant-time check of a secret against the stored hash."""
        return hmac.compare_digest(self.secret_hash, secret_hash(self.salt, secret))

    def request(self, status: str, lazy: bool) -> None:
        """Store a status change request (``""`` clears it)."""
        self.status_requested, self.lazy = status, lazy and bool(status)

    def summary(self) -> dict[str, Any]:
        """``WorkerSummary``: never the secret."""
        document: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "version": self.software,
            "can_restart": self.can_restart,
        }
        if self.last_seen is not None:
            document["last_seen"] = stamp(self.last_seen)
        if self.status_requested:
            document["status_change"] = {"status": self.status_requested, "is_lazy": self.lazy}
        return document


@dataclass
class Tag:
    """A worker tag: jobs with a tag go only to workers with that tag."""

    id: str
    name: str
    description: str = ""

    def document(self) -> dict[str, str]:
        """``WorkerTag``."""
        document = {"id": self.id, "name": self.name}
        if self.description:
            document["description"] = self.description
        return document


@dataclass
class Job:
    """A job: its tasks are handed out in priority order. Its status follows its
    tasks (``TaskQueue.refresh``): ``queued`` until one is handed out, ``active``
    from then on, ``completed`` once all are."""

    id: str
    name: str
    type: str = "simple-blender-render"
    priority: int = 50
    tag_id: Optional[str] = None  # None: any worker may run it
    status: str = "queued"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        """``Job`` (without settings and metadata, which the stand-in has none of)."""
        document: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "priority": self.priority,
            "submitter_platform": "linux",
            "created": stamp(self.created),
            "updated": stamp(self.updated),
            "status": self.status,
            "activity": "",
            "steps_completed": 0,
            "steps_total": 0,
        }
        if self.tag_id is not None:
            document["worker_tag"] = self.tag_id
        return document


@dataclass
class Task:
    """One task of a job, as the Manager tracks it. Its commands carry their
    ``total_step_count`` (0 when the job type gives none: the Manager stores the Go
    zero value), and the task's ``steps_total`` counts each command as at least one
    step (``persistence/jobs.go``, ``StoreAuthoredJob``; steps since 3.8)."""

    id: str
    job_id: str
    name: str
    type: str
    commands: list[dict[str, Any]]
    priority: int = 50
    status: str = "queued"
    worker_id: Optional[str] = None
    activity: str = ""
    log: str = ""
    index_in_job: int = 0
    updated: float = field(default_factory=time.time)
    steps_completed: int = 0

    def __post_init__(self) -> None:
        self.commands = [{"total_step_count": 0, **command} for command in self.commands]

    @property
    def steps_total(self) -> int:
        """The task's steps: each command's ``total_step_count``, at least 1."""
        return sum(max(1, int(c["total_step_count"])) for c in self.commands)

    def complete_steps(self, steps: int) -> None:
        """A worker's ``steps_completed``, capped at ``steps_total``
        (``worker_task_updates.go``, ``doTaskUpdateSteps``)."""
        self.steps_completed = min(steps, self.steps_total)

    def summary(self, workers: dict[str, Worker]) -> dict[str, Any]:
        """``TaskSummary``; ``worker`` only while its worker is listed (a deleted one
        is not, as the real Manager's lookup of a soft-deleted worker finds none)."""
        document: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "index_in_job": self.index_in_job,
            "priority": self.priority,
            "task_type": self.type,
            "updated": stamp(self.updated),
            "steps_completed": self.steps_completed,
            "steps_total": self.steps_total,
        }
        worker = workers.get(self.worker_id or "")
        if worker is not None and not worker.deleted:
            document["worker"] = {"id": worker.id, "name": worker.name, "address": "127.0.0.1"}
        return document
