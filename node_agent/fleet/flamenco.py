"""The Flamenco Manager, as fleet reads and changes it: its workers, its queue (the
jobs API of Manager 3.6 and newer: ``GET /api/v3/jobs``, ``GET /api/v3/jobs/{id}/tasks``)
and status requests. A thin edge over ``node_agent.manager.api``: every call logs
what went wrong and returns None or False, never raises.
"""

from __future__ import annotations

from typing import Any, Optional

from node_agent.common.log import get_logger
from node_agent.fleet.model import Queue
from node_agent.manager.api import ManagerApi, ManagerWorker, get_list, list_workers, set_status

log = get_logger("fleet")

JOBS = "/api/v3/jobs"
# Jobs whose tasks can still be handed out (paused, failed, canceled ones cannot).
RUNNABLE_JOBS = ("queued", "active", "requeueing")
# Tasks that need a worker: waiting ones (a soft-failed task is handed out again)
# and running ones.
WAITING_TASKS = ("queued", "soft-failed")
RUNNING = "active"


def _job(document: Any) -> tuple[str, str]:
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        raise ValueError("not a job document")
    return document["id"], str(document.get("status", ""))


def _task(document: Any) -> tuple[str, str, Optional[str]]:
    """A ``TaskSummary``: name, status, and the id of the worker running it."""
    if not isinstance(document, dict):
        raise ValueError("not a task document")
    worker = document.get("worker")
    worker_id = worker.get("id") if isinstance(worker, dict) else None
    return str(document.get("name", "")), str(document.get("status", "")), worker_id


def read_queue(api: ManagerApi) -> Optional[Queue]:
    """How many tasks wait or run in runnable jobs, and which worker runs which task;
    None when the Manager could not say."""
    jobs = get_list(api, JOBS, "jobs", _job, "list the jobs (Flamenco 3.6 or newer)")
    if jobs is None:
        return None
    demand, busy = 0, {}
    for job_id, status in jobs:
        if status not in RUNNABLE_JOBS:
            continue
        tasks = get_list(api, f"{JOBS}/{job_id}/tasks", "tasks", _task, f"list job {job_id}")
        if tasks is None:
            return None
        for name, task_status, worker_id in tasks:
            if task_status in WAITING_TASKS or task_status == RUNNING:
                demand += 1
            if task_status == RUNNING and worker_id:
                busy[worker_id] = name
    return Queue(demand, busy)


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
