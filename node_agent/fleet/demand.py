"""How much work the Manager would really hand this pool's workers: the demand ``fleet
scale`` follows. Pure: the queue as read (``model.QueueRead``) and the pool's
workers in, a ``Demand`` out.

Flamenco's scheduler (``internal/manager/persistence/sqlc/query_task_scheduler.sql``,
``FindRunnableTask``, 3.9) hands a worker only a ``queued`` or ``soft-failed`` task of
an ``active`` or ``queued`` job, and skips tasks with an unfinished dependency, task
types blocklisted for that worker in that job (``job_blocks``), tasks that worker
failed before, and jobs whose worker tag the worker lacks. Here:

- **Waiting** tasks are those a worker of this pool, or of a node it would add,
  could be handed: a queued or soft-failed task of an active or queued job, whose
  job has no tag or a tag some worker of the pool has (or the pool's start task
  gives new workers: ``FLAMENCO_WORKER_TAGS``), and not waiting for other tasks.
- **Dependencies** are not in the jobs API (3.9 exposes none), so they are
  approximated from what it exposes: a task waits while a task of another type
  earlier in its job (a lower ``index_in_job``) is unfinished. That is exactly a
  Simple Blender Render job's ``preview-video`` (``ffmpeg``) task, which depends on
  every render task; dependencies between tasks of one type (the test job
  ``echo-sleep-test``) are not seen, and count as waiting.
- **Running** tasks are every ``active`` task on a worker of the pool, whatever its
  job's status: a ``pause-requested`` or ``cancel-requested`` job's active tasks run
  to their end, and their workers are busy.
- An idle worker of the pool that may take none of the waiting tasks (blocklisted
  for their type in their job, or lacking their job's tag) is **unfit** for them: it
  does not meet the demand (a new node's worker would). Tasks a worker failed
  before are not in the jobs API; that check is not made.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from node_agent.fleet.model import JobRead, QueueRead, TaskRead

# Jobs whose tasks the scheduler hands out, and those tasks' statuses.
SCHEDULABLE_JOBS = ("active", "queued")
SCHEDULABLE_TASKS = ("queued", "soft-failed")
# Jobs that may have a task running: the schedulable ones, and those winding down.
LISTED_JOBS = (*SCHEDULABLE_JOBS, "requeueing", "pause-requested", "cancel-requested")
FINISHED = "completed"


@dataclass(frozen=True)
class Demand:
    """The work for this pool's workers now."""

    waiting: int  # tasks a worker of the pool could be handed
    running: int  # tasks the pool's workers run
    held: Mapping[str, int] = field(default_factory=dict)  # why other queued tasks wait: count
    unfit: frozenset[str] = frozenset()  # idle workers (ids) that may take none of them

    @property
    def total(self) -> int:
        """Tasks that need a node now: waiting and running."""
        return self.waiting + self.running


def _first_unfinished(job: JobRead) -> dict[str, int]:
    """Per task type, the lowest index of an unfinished task of that type."""
    first: dict[str, int] = {}
    for task in job.tasks:
        if task.status != FINISHED and task.index < first.get(task.type, task.index + 1):
            first[task.type] = task.index
    return first


def _blocked_by_order(first: Mapping[str, int], task: TaskRead) -> bool:
    """Whether a task of another type earlier in the job is unfinished (``first``:
    the job's ``_first_unfinished``)."""
    return any(index < task.index for kind, index in first.items() if kind != task.type)


def _may_take(worker_id: str, tags: Collection[str], job: JobRead, task: TaskRead) -> bool:
    return (worker_id, task.type) not in job.blocklist and (
        job.tag_id is None or job.tag_id in tags
    )


def assess(queue: QueueRead, pool_workers: Mapping[str, bool]) -> Demand:
    """The demand on the pool whose workers are ``pool_workers`` (worker id -> idle:
    ready for work and running none)."""
    tags_of_pool = set(queue.pool_tags)
    for worker_id in pool_workers:
        tags_of_pool |= queue.worker_tags.get(worker_id, frozenset())
    held: dict[str, int] = {}
    waiting: list[tuple[JobRead, TaskRead]] = []
    running = 0
    for job in queue.jobs:
        first = _first_unfinished(job)
        for task in job.tasks:
            if task.status == "active" and task.worker_id in pool_workers:
                running += 1
            if job.status not in SCHEDULABLE_JOBS or task.status not in SCHEDULABLE_TASKS:
                continue
            if job.tag_id is not None and job.tag_id not in tags_of_pool:
                why = f"of a job tagged {job.tag_id} (no worker of this pool has the tag)"
            elif _blocked_by_order(first, task):
                why = "waiting for the tasks before them in their job"
            else:
                waiting.append((job, task))
                continue
            held[why] = held.get(why, 0) + 1
    unfit = frozenset(
        worker_id
        for worker_id, idle in pool_workers.items()
        if idle
        and waiting
        and not any(
            _may_take(worker_id, queue.worker_tags.get(worker_id, frozenset()), job, task)
            for job, task in waiting
        )
    )
    return Demand(len(waiting), running, held, unfit)
