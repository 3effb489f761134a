"""The demand fleet scale follows is what Flamenco's scheduler would hand this pool's
workers: only queued and soft-failed tasks of active and queued jobs, not a task
waiting for the tasks before it, not a job whose tag no worker of the pool has; the
workers still rendering a paused job's task are busy; idle workers blocklisted for
all the waiting work do not meet it; dedicated nodes meet it first."""

from __future__ import annotations

import json
import uuid
from typing import Optional

import pytest

from node_agent.fleet.demand import assess
from node_agent.fleet.model import JobRead, QueueRead, TaskRead
from node_agent.fleet.scaling import Bounds, Memory, ScaleView, SpotNode, decide
from node_agent.manager.api import ManagerWorker
from node_agent.sim.standins.farm_model import Job
from node_agent.sim.standins.manager import FakeManager
from tests.fleet_farm import Farm, fleet

NOW = 1_800_000_000.0


def task(name: str, status: str, kind: str, index: int, worker: Optional[str] = None) -> TaskRead:
    return TaskRead(f"id-{name}", name, status, kind, index, worker)


def render_job(  # noqa: PLR0917
    status: str = "active",
    frames: tuple[str, ...] = ("queued", "queued"),
    video: str = "queued",
    tag: Optional[str] = None,
    blocklist: frozenset[tuple[str, str]] = frozenset(),
    job_id: str = "job",
) -> JobRead:
    """A Simple Blender Render job: render tasks, then the preview video."""
    tasks = [
        task(f"render-{i}", s, "blender", i, "w1" if s == "active" else None)
        for i, s in enumerate(frames)
    ]
    tasks.append(task("preview-video", video, "ffmpeg", len(frames)))
    return JobRead(job_id, "shot", status, tag, tuple(tasks), blocklist)


def test_only_what_the_scheduler_hands_out_is_waiting() -> None:
    queue = QueueRead(
        (
            render_job(frames=("completed", "soft-failed", "queued", "failed")),
            render_job("paused", frames=("paused",), job_id="paused"),
            render_job("canceled", frames=("canceled",), job_id="canceled"),
            render_job("queued", frames=("queued",), job_id="new"),
        )
    )
    demand = assess(queue, {})
    # soft-failed and queued render tasks of the active job, the queued job's one;
    # every preview video waits for its job's renders; a failed task is not retried.
    assert (demand.waiting, demand.running) == (3, 0)
    assert demand.held == {"waiting for the tasks before them in their job": 2}


def test_a_video_is_demand_once_its_renders_are_done() -> None:
    done = render_job(frames=("completed", "completed"))
    assert assess(QueueRead((done,)), {}).waiting == 1
    rendering = render_job(frames=("completed", "active"))
    demand = assess(QueueRead((rendering,)), {"w1": False})
    assert (demand.waiting, demand.running) == (0, 1)


def test_a_paused_jobs_running_task_keeps_its_worker_busy() -> None:
    paused = render_job("pause-requested", frames=("active", "paused", "paused"), video="paused")
    queue = QueueRead((paused,))
    assert queue.running == {"w1": "render-0"}
    demand = assess(queue, {"w1": False})
    assert (demand.waiting, demand.running, demand.total) == (0, 1, 1)
    # A worker of another pool renders it: not this pool's demand.
    assert assess(queue, {"w9": True}).total == 0


def test_a_tag_no_worker_of_the_pool_has_is_not_demand() -> None:
    tagged = render_job(tag="gpu", frames=("queued",) * 5, video="queued")
    queue = QueueRead((tagged,), worker_tags={"w1": frozenset({"cpu"})})
    demand = assess(queue, {"w1": True})
    assert demand.waiting == 0 and sum(demand.held.values()) == 6
    assert any("tagged gpu" in reason for reason in demand.held)
    with_tag = QueueRead((tagged,), worker_tags={"w1": frozenset({"gpu"})})
    assert assess(with_tag, {"w1": True}).waiting == 5
    # The pool's start task gives new workers the tag: a pool of none yet scales up.
    assert assess(QueueRead((tagged,), pool_tags=frozenset({"gpu"})), {}).waiting == 5


def test_an_idle_worker_blocklisted_for_all_the_waiting_work_is_unfit() -> None:
    blocked = render_job(frames=("queued", "queued"), blocklist=frozenset({("w1", "blender")}))
    demand = assess(QueueRead((blocked,)), {"w1": True, "w2": True, "w3": False})
    assert demand.waiting == 2 and demand.unfit == {"w1"}
    assert assess(QueueRead((render_job(),)), {"w1": True}).unfit == frozenset()


def _worker(wid: str, status: str = "awake") -> ManagerWorker:
    return ManagerWorker(wid, f"n-{wid}", status, "3.9", True)


def test_dedicated_nodes_meet_the_demand_first() -> None:
    bounds = Bounds(0, 10)
    one = ScaleView(NOW, 0, True, False, demand=1, nodes=(), dedicated=1)
    assert [s.act.value for s in decide(one, bounds, Memory()).steps] == ["keep"]
    three = ScaleView(NOW, 0, True, False, demand=3, nodes=(), dedicated=1)
    plan = decide(three, bounds, Memory())
    assert plan.desired == 2 and "1 of them dedicated" in plan.steps[0].reason


def test_the_pool_grows_past_an_unfit_worker_and_drains_it_first() -> None:
    unfit = SpotNode("n0", "idle", _worker("w0"), False, unfit=True)
    busy = SpotNode("n1", "idle", _worker("w1"), True)
    plan = decide(ScaleView(NOW, 2, True, False, 2, (unfit, busy)), Bounds(0, 10), Memory())
    assert plan.desired == 3  # one waiting and one running task, and the unfit node
    idle = SpotNode("n2", "idle", _worker("w2", "asleep"), False)
    memory = Memory({"n0": NOW - 3600, "n2": NOW - 3600})
    view = ScaleView(
        NOW,
        3,
        True,
        False,
        1,
        (busy, idle, SpotNode("n0", "idle", _worker("w0"), False, unfit=True)),
    )
    drained = [s for s in decide(view, Bounds(0, 10), memory).steps if s.act.value == "drain"]
    assert drained[0].nodes[0] == "n0"


def _job(manager: FakeManager, tag: Optional[str] = None, status: Optional[str] = None) -> Job:
    """A Simple Blender Render job of three frames and a preview video on the stand-in."""
    job = Job(str(uuid.uuid4()), "shot", tag_id=tag)
    with manager.lock:
        renders = [manager.farm.add_task(job, f"render-{i}", "misc", []).id for i in range(3)]
        manager.farm.add_task(job, "preview-video", "ffmpeg", [], depends_on=tuple(renders))
        if status is not None:
            manager.farm.request_job_status(job.id, status)
    return job


def test_scale_counts_what_the_stand_in_scheduler_would_hand_out(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end against the stand-in Manager: one dedicated node that renders, a
    render job (three frames and a video), a job tagged for a GPU pool, a paused
    job whose one running task keeps its Spot worker busy."""
    manager = farm.manager
    gpu = manager.add_tag("GPU")
    dedicated = farm.node(dedicated=True, agent={})
    spot = farm.node(agent={})
    paused = _job(manager)
    busy = farm.worker(spot)
    busy.take_task()  # a render of the first job, before it is paused
    with manager.lock:
        manager.farm.request_job_status(paused.id, "pause-requested")
    _job(manager, tag=gpu)
    _job(manager)
    farm.worker(dedicated).take_task()
    code, out, err = fleet(capsys, "scale", "--min", "0", "--max", "10", "--json")
    assert code == 0, err
    document = json.loads(out)
    # Waiting: two frames of the last job; running: the dedicated node's frame and
    # the paused job's frame on the Spot node. Four tasks, one dedicated node.
    assert document["demand"] == 4 and document["dedicated"] == 1
    assert document["desired"] == 3, document
    held = document["held"]
    assert held["waiting for the tasks before them in their job"] == 1
    assert sum(v for k, v in held.items() if "tagged" in k) == 4
    assert [s["act"] for s in document["steps"]] == ["resize"]
