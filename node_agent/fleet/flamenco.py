"""The Flamenco Manager, as fleet reads and changes it: its workers, its queue (the
jobs API of Manager 3.6 and newer: ``GET /api/v3/jobs``, ``GET
/api/v3/jobs/{id}/tasks``, ``GET /api/v3/jobs/{id}/blocklist``), worker tags and
status requests. A thin edge over ``node_agent.manager.api``: every call logs what
went wrong and returns None or False, never raises.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Callable, Optional, TypeVar

import requests

from node_agent.common.log import get_logger
from node_agent.fleet.demand import LISTED_JOBS, SCHEDULABLE_JOBS, SCHEDULABLE_TASKS
from node_agent.fleet.model import JobRead, QueueRead, TaskRead
from node_agent.manager.api import (
    ManagerApi,
    ManagerWorker,
    get_list,
    get_worker,
    list_tags,
    list_workers,
    set_status,
)
from node_agent.manager.transport import manager_session, reason

log = get_logger("fleet")

JOBS = "/api/v3/jobs"
T = TypeVar("T")


def _get_json(api: ManagerApi, path: str, what: str, parse: Callable[[Any], T]) -> Optional[T]:
    """``GET path`` and its JSON answer through ``parse`` (``manager.api`` reads only
    objects; a blocklist is a list); None after a warning on any failure."""
    url = api.url.rstrip("/") + path
    try:
        with manager_session(api.proxies) as session:
            response = session.get(url, timeout=api.timeout)
    except requests.RequestException as exc:
        log.warning("could not %s: Manager %s: %s", what, api.url, reason(exc))
        return None
    if response.status_code != 200:
        log.warning("could not %s: Manager %s: HTTP %d", what, api.url, response.status_code)
        return None
    try:
        return parse(response.json())
    except (TypeError, ValueError):
        log.warning("could not %s: unexpected answer from the Manager", what)
        return None


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is not text")
    return value


def _job(document: Any) -> JobRead:
    """A ``Job``: id, name, status and worker tag (its tasks come later)."""
    if not isinstance(document, dict):
        raise ValueError("not a job document")
    tag = document.get("worker_tag")
    return JobRead(
        _text(document, "id"),
        str(document.get("name", "")),
        _text(document, "status"),
        tag if isinstance(tag, str) and tag else None,
    )


def _task(document: Any) -> TaskRead:
    """A ``TaskSummary``."""
    if not isinstance(document, dict):
        raise ValueError("not a task document")
    index = document.get("index_in_job")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError("index_in_job is not a number")
    worker = document.get("worker")
    worker_id = worker.get("id") if isinstance(worker, dict) else None
    return TaskRead(
        _text(document, "id"),
        str(document.get("name", "")),
        _text(document, "status"),
        _text(document, "task_type"),
        index,
        worker_id if isinstance(worker_id, str) else None,
    )


def _blocklist(document: Any) -> frozenset[tuple[str, str]]:
    """A ``JobBlocklist``: (worker id, task type) pairs."""
    if not isinstance(document, list):
        raise ValueError("not a list")
    pairs = set()
    for entry in document:
        if not isinstance(entry, dict):
            raise ValueError("not a blocklist entry")
        pairs.add((_text(entry, "worker_id"), _text(entry, "task_type")))
    return frozenset(pairs)


def read_queue(
    api: ManagerApi,
    pool_workers: Collection[str],
    tag_names: Collection[str] = (),
    *,
    detail: bool = True,
) -> Optional[QueueRead]:
    """The jobs that may run a task, with their tasks; with ``detail`` also their
    blocklists and, when a job has a tag, the tags of ``pool_workers`` and the ids
    of ``tag_names`` (the tags the pool gives new workers). None when the Manager
    could not say."""
    jobs = get_list(api, JOBS, "jobs", _job, "list the jobs (Flamenco 3.6 or newer)")
    if jobs is None:
        return None
    found = []
    for job in jobs:
        if job.status not in LISTED_JOBS:
            continue
        tasks = get_list(api, f"{JOBS}/{job.id}/tasks", "tasks", _task, f"list job {job.id}")
        if tasks is None:
            return None
        blocklist: frozenset[tuple[str, str]] = frozenset()
        waiting = any(t.status in SCHEDULABLE_TASKS for t in tasks)
        if detail and waiting and job.status in SCHEDULABLE_JOBS:
            what = f"read the blocklist of job {job.id}"
            read = _get_json(api, f"{JOBS}/{job.id}/blocklist", what, _blocklist)
            if read is None:
                return None
            blocklist = read
        found.append(JobRead(job.id, job.name, job.status, job.tag_id, tuple(tasks), blocklist))
    if not (detail and any(j.tag_id for j in found)):
        return QueueRead(tuple(found))
    tags = _worker_tags(api, pool_workers)
    pool_tags = _tag_ids(api, tag_names) if tag_names else frozenset()
    if tags is None or pool_tags is None:
        return None
    return QueueRead(tuple(found), tags, pool_tags)


def _worker_tags(
    api: ManagerApi, worker_ids: Collection[str]
) -> Optional[dict[str, frozenset[str]]]:
    tags = {}
    for worker_id in worker_ids:
        worker = get_worker(api, worker_id)
        if worker is None:
            return None
        tags[worker_id] = frozenset(t.id for t in worker.tags)
    return tags


def _tag_ids(api: ManagerApi, names: Collection[str]) -> Optional[frozenset[str]]:
    known = list_tags(api)
    if known is None:
        return None
    by_name: Mapping[str, str] = {t.name: t.id for t in known}
    return frozenset(by_name[n] for n in names if n in by_name)


def read_workers(api: ManagerApi) -> Optional[tuple[ManagerWorker, ...]]:
    """Every worker on the Manager; None when it could not say."""
    workers = list_workers(api)
    return None if workers is None else tuple(workers)


def take_offline_lazily(api: ManagerApi, worker: ManagerWorker) -> bool:
    """Ask a worker to go offline once its current task is done (it takes no new
    one); True when the Manager accepted it."""
    return set_status(api, worker.id, "offline", lazy=True)


def cancel_request(api: ManagerApi, worker: ManagerWorker) -> bool:
    """Withdraw a pending status request: asking a worker for the status it has
    cancels any other request (as the Manager's web interface does)."""
    return set_status(api, worker.id, worker.status, lazy=False)
