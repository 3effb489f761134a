"""The stand-in Flamenco Manager's task queue: jobs and their tasks, handed out to
awake workers (queued -> active -> completed/failed) and requeued when their worker
signs off, stops being awake or is deleted (``worker_task_updates.go``); and the
queries of the jobs API (3.6 and newer: ``GET /jobs``, ``GET /jobs/{id}``, ``GET
/jobs/{id}/tasks``, ``GET /jobs/{id}/blocklist``, ``jobs_query.go``) and of a
worker's task (``FetchWorkerTask``: its active task in an active job, else the task
it last worked on).

The scheduler is the real one's (``persistence/sqlc/query_task_scheduler.sql``,
``FindRunnableTask``, 3.9): a worker gets its own active task of an active or queued
job first, else a ``queued`` or ``soft-failed`` task of an ``active`` or ``queued``
job whose dependencies are all completed, of a type the worker supports and is not
blocklisted for in that job, of a job without a tag or with one of the worker's
tags; highest job priority, then task priority. Job status requests
(``task_state_machine.go``): ``pause-requested`` pauses the queued and soft-failed
tasks at once and lets the active ones finish, then the job is ``paused``;
``cancel-requested`` cancels every task that could still run."""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional

from node_agent.sim.standins.farm_model import (
    TASK_STATUSES,
    FarmError,
    Job,
    StatusChangeRequested,
    Task,
    Worker,
    valid_uuid,
)

# The scheduler's (``task_scheduler.go``): tasks it hands out, of jobs in these statuses.
SCHEDULABLE_TASKS = ("queued", "soft-failed")
SCHEDULABLE_JOBS = ("active", "queued")


class TaskQueue:
    """Jobs and tasks, with the Manager's rules for them. Not thread-safe."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}  # in creation order
        self.depends: dict[str, list[str]] = {}  # task id -> the tasks it waits for
        self.blocks: dict[str, set[tuple[str, str]]] = {}  # job id -> (worker id, task type)
        self.requeued = 0  # active tasks taken back from their worker (a render lost)

    def schedule(self, worker: Worker) -> Optional[Task]:
        """``task``: a task for this worker, or None. A pending status request (lazy
        or not) is 423, a worker that is not awake 409."""
        if worker.status_requested:
            raise StatusChangeRequested(worker.status_requested)
        if worker.status != "awake":
            raise FarmError(
                409,
                f'worker is in state "{worker.status}", requires state "awake" to execute tasks',
            )
        for task in self.tasks.values():
            if (
                task.worker_id == worker.id
                and task.status == "active"
                and self.jobs[task.job_id].status in SCHEDULABLE_JOBS
            ):
                return task
        candidates = [t for t in self.tasks.values() if self._runnable(worker, t)]
        if not candidates:
            return None
        task = max(candidates, key=lambda t: (self.jobs[t.job_id].priority, t.priority))
        task.worker_id = worker.id
        self.set_status(task, "active")
        return task

    def task_update(self, worker: Worker, task_id: str, body: Any) -> None:
        """``task/{id}``: status, activity and log from the worker running it."""
        task = self._assigned(worker, task_id)
        if not isinstance(body, dict):
            raise FarmError(400, "invalid format")
        status = body.get("taskStatus")
        if status == "soft-failed" or (status is not None and status not in TASK_STATUSES):
            raise FarmError(400, f"task status {status} not allowed to be sent by Worker")
        if isinstance(body.get("activity"), str):
            task.activity = body["activity"]
        if isinstance(body.get("log"), str):
            task.log += body["log"]
        if status is not None:
            self.set_status(task, status)

    def may_i_run(self, worker: Worker, task_id: str) -> dict[str, Any]:
        """``may-i-run``: a lazy status request lets the task finish."""
        if not valid_uuid(task_id):
            raise FarmError(400, "task ID not valid")
        answer: dict[str, Any] = {
            "mayKeepRunning": False,
            "reason": "",
            "statusChangeRequested": False,
        }
        task = self.tasks.get(task_id)
        if worker.status_requested and not worker.lazy:
            answer.update(reason="worker status change requested", statusChangeRequested=True)
        elif task is None:
            answer["reason"] = "Task not found"
        elif task.worker_id != worker.id:
            answer["reason"] = "task not assigned to this worker"
        elif task.status != "active":
            answer["reason"] = f'task is in non-runnable status "{task.status}"'
        else:
            answer["mayKeepRunning"] = True
        return answer

    def add_task(
        self,
        job: Job,
        name: str,
        task_type: str,
        commands: list[dict[str, Any]],
        depends_on: tuple[str, ...] = (),
    ) -> Task:
        """Queue a task of ``job`` (the job is stored if it is new) that runs once the
        tasks ``depends_on`` are completed."""
        self.jobs.setdefault(job.id, job)
        index = sum(t.job_id == job.id for t in self.tasks.values())
        task = Task(str(uuid.uuid4()), job.id, name, task_type, commands, index_in_job=index)
        self.tasks[task.id] = task
        self.depends[task.id] = list(depends_on)
        self.refresh(job)
        return task

    def block(self, job_id: str, worker_id: str, task_type: str) -> None:
        """Blocklist a worker for a task type of a job (the Manager does this after
        the worker failed it too often)."""
        self.blocks.setdefault(job_id, set()).add((worker_id, task_type))

    def request_job_status(self, job_id: str, status: str) -> None:
        """A job status request, as the web interface makes it (``pause-requested``,
        ``cancel-requested``, ``queued``)."""
        job = self.job(job_id)
        tasks = [t for t in self.tasks.values() if t.job_id == job_id]
        job.status, job.updated = status, time.time()
        if status == "pause-requested":
            for task in tasks:
                if task.status in SCHEDULABLE_TASKS:
                    task.status, task.updated = "paused", time.time()
        elif status == "cancel-requested":
            for task in tasks:
                if task.status in (*SCHEDULABLE_TASKS, "active"):
                    task.status, task.updated = "canceled", time.time()
        elif status == "queued":
            for task in tasks:
                if task.status in ("paused", "canceled", "failed"):
                    task.status, task.updated = "queued", time.time()
        self.refresh(job)

    def set_status(self, task: Task, status: str) -> None:
        """A task's new status (stamped), and its job's status after it."""
        task.status, task.updated = status, time.time()
        self.refresh(self.jobs[task.job_id])

    def refresh(self, job: Job) -> None:
        """The job's status from its tasks' (failing jobs are not modelled): a job
        being paused or canceled is so once no task of it runs."""
        statuses = [t.status for t in self.tasks.values() if t.job_id == job.id]
        if job.status in ("pause-requested", "cancel-requested"):
            if "active" not in statuses:
                final = "paused" if job.status == "pause-requested" else "canceled"
                job.status, job.updated = final, time.time()
            return
        if job.status in ("paused", "canceled"):
            return
        if statuses and all(s == "completed" for s in statuses):
            status = "completed"
        elif any(s != "queued" for s in statuses):
            status = "active"
        else:
            status = "queued"
        if status != job.status:
            job.status, job.updated = status, time.time()

    # -- the jobs API ------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        """``GET /jobs/{id}``: 400 for an id that is not a UUID, 404 for no such job."""
        if not valid_uuid(job_id):
            raise FarmError(400, "job ID not valid")
        job = self.jobs.get(job_id)
        if job is None:
            raise FarmError(404, "no such job")
        return job

    def job_tasks(self, job_id: str, workers: dict[str, Worker]) -> list[dict[str, Any]]:
        """``GET /jobs/{id}/tasks``: summaries of the job's tasks (none for an
        unknown job, as the real query finds none)."""
        if not valid_uuid(job_id):
            raise FarmError(400, "job ID not valid")
        return [t.summary(workers) for t in self.tasks.values() if t.job_id == job_id]

    def worker_task(self, worker: Worker) -> Optional[dict[str, Any]]:
        """A worker's ``task`` (``WorkerTask``): the active task of an active job it
        runs, else the one it last worked on; None when it never had one."""
        own = [t for t in self.tasks.values() if t.worker_id == worker.id]
        if not own:
            return None

        def active(task: Task) -> bool:
            return task.status == "active" and self.jobs[task.job_id].status == "active"

        task = max(own, key=lambda t: (active(t), t.updated))
        return {**task.summary({}), "job_id": task.job_id}

    def job_blocklist(self, job_id: str, workers: dict[str, Worker]) -> list[dict[str, str]]:
        """``GET /jobs/{id}/blocklist`` (``JobBlocklist``)."""
        self.job(job_id)
        return [
            {"worker_id": w, "task_type": t, "worker_name": workers[w].name}
            for w, t in sorted(self.blocks.get(job_id, ()))
            if w in workers
        ]

    def _runnable(self, worker: Worker, task: Task) -> bool:
        """``FindRunnableTask``'s conditions for this worker."""
        job = self.jobs[task.job_id]
        return (
            task.status in SCHEDULABLE_TASKS
            and job.status in SCHEDULABLE_JOBS
            and all(self.tasks[d].status == "completed" for d in self.depends.get(task.id, ()))
            and task.type in worker.supported_task_types
            and (worker.id, task.type) not in self.blocks.get(job.id, set())
            and (job.tag_id is None or job.tag_id in worker.tag_ids)
        )

    def _assigned(self, worker: Worker, task_id: str) -> Task:
        if not valid_uuid(task_id):
            raise FarmError(400, "task ID not valid")
        task = self.tasks.get(task_id)
        if task is None:
            raise FarmError(404, f"task {task_id} not found")
        if task.worker_id != worker.id:
            raise FarmError(409, f"task {task_id} is not assigned to you")
        return task

    def _requeue(self, worker: Worker) -> None:
        for task in self.tasks.values():
            if task.worker_id == worker.id and task.status == "active":
                task.worker_id = None
                self.requeued += 1
                self.set_status(task, "queued")
