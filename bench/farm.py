"""A day of a Spot render farm in simulated time, scaled three ways:
``python -m bench.farm [--seed N] [--evictions-per-hour R] [--max M] ...``.

The day: bursts of jobs (a few hundred frames each, minutes a frame, the preview
video last, after every frame), rendered by Spot nodes that take minutes to start
(billed from allocation) and are evicted at a given hourly rate (the frame a node
was rendering is rendered again; Batch brings the node back when capacity returns).
Workers take frames as Flamenco's scheduler hands them out (oldest job first, the
video only once its frames are done).

Scaled by:

- **fleet scale**: fleet's own pure deciders, ``demand.assess`` and
  ``scaling.decide``, every ``--every`` seconds (``fleet scale --every``), their
  steps carried out as fleet carries them out (resize up, lazy offline, remove
  exactly the offline nodes);
- **fixed**: a pool of ``--max`` nodes all day, sized for the peak;
- **autoscale**: a Batch autoscale formula on CPU use, as Microsoft's example
  ("Create a formula to automatically scale compute nodes"): 10 % more nodes when
  the lowest CPU use of the last 10 minutes is over 70 %, 10 % fewer when the mean
  of the last hour is under 20 %, evaluated every 5 minutes (the shortest interval
  Batch allows), at least one node more or fewer, one node at least. Batch picks the
  nodes a scale-in removes: Flamenco gives Batch no tasks, so a rendering node may
  go, and its frame is rendered again.

Printed for each: billed node-hours, the share of billed time that rendered, frames
rendered again (evictions, and scale-ins that took a rendering node), and when the
day's last job was done. Simulated time: a run takes seconds.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable, Optional

from node_agent.fleet.demand import assess
from node_agent.fleet.model import JobRead, QueueRead, TaskRead
from node_agent.fleet.scaling import Act, Bounds, Memory, ScaleView, SpotNode, decide
from node_agent.manager.api import ManagerWorker

STEP = 10.0  # seconds of simulated time a step
VIDEO = 180.0  # seconds the preview video takes
HOUR = 3600.0


@dataclass
class Job:
    """A render job: its frames' durations, the video after them."""

    id: str
    arrival: float
    frame_seconds: list[float]
    queued: list[int] = field(default_factory=list)  # frame indices waiting
    running: set[int] = field(default_factory=set)
    done: int = 0
    video: str = "waiting"  # waiting, queued, running, done
    finished: Optional[float] = None

    def __post_init__(self) -> None:
        self.queued = list(range(len(self.frame_seconds)))


@dataclass
class Node:
    """A Spot node and its worker."""

    id: str
    state: str = "starting"  # starting, idle, preempted
    ready_at: float = 0.0  # when a starting or preempted node is up
    worker: str = ""  # "" (no entry yet), awake, offline, error
    lazy_offline: bool = False
    task: Optional[tuple[Job, int]] = None  # frame index, -1 for the video
    ends: float = 0.0


def make_day(rng: random.Random) -> list[Job]:
    """Bursts of jobs through the day: a few after 9:30, 13:30, 17:00 and 21:00."""
    jobs = []
    for start in (9.5, 13.5, 17.0, 21.0):
        when = start * HOUR
        for _ in range(rng.randint(3, 6)):
            when += rng.expovariate(1 / 600)
            minutes = rng.uniform(2, 6)
            frames = [minutes * 60 * rng.uniform(0.8, 1.2) for _ in range(rng.randint(150, 400))]
            jobs.append(Job(f"job-{len(jobs)}", when, frames))
    return jobs


@dataclass
class Farm:
    """The pool, the queue, and what was billed and rendered."""

    rng: random.Random
    jobs: list[Job]
    start_up: float
    evictions_per_hour: float
    capacity_back: float
    now: float = 0.0
    nodes: dict[str, Node] = field(default_factory=dict)
    resizing_until: float = 0.0
    billed: float = 0.0
    rendered: float = 0.0
    again: int = 0
    cpu: list[float] = field(default_factory=list)  # the pool's CPU use, a sample a minute
    serial: int = 0

    def arrived(self) -> Iterator[Job]:
        return (j for j in self.jobs if j.arrival <= self.now and j.finished is None)

    def add(self, count: int) -> None:
        for _ in range(count):
            self.serial += 1
            node = Node(f"node-{self.serial}", ready_at=self.now + self.start_up)
            self.nodes[node.id] = node
        self.resizing_until = self.now + 120

    def remove(self, ids: list[str]) -> None:
        for node_id in ids:
            node = self.nodes.pop(node_id)
            self._lose(node)
        self.resizing_until = self.now + 60

    def _lose(self, node: Node) -> None:
        """A node's task is taken from it: rendered again."""
        if node.task is not None:
            job, frame = node.task
            if frame >= 0:
                job.running.discard(frame)
                job.queued.insert(0, frame)
                self.again += 1
            else:
                job.video = "queued"
            node.task = None

    def _next(self) -> Optional[tuple[Job, int]]:
        for job in self.arrived():
            if job.queued:
                return job, job.queued.pop(0)
            if job.video == "queued":
                job.video = "running"
                return job, -1
        return None

    def step(self) -> None:
        """One step: start-ups, finished tasks, evictions, new tasks, billing."""
        self.now += STEP
        evict = self.evictions_per_hour * STEP / HOUR
        busy = 0
        for node in self.nodes.values():
            if node.state in ("starting", "preempted") and self.now >= node.ready_at:
                if node.state == "preempted":
                    node.state, node.ready_at = "starting", self.now + self.start_up
                    continue
                node.state, node.worker = "idle", "awake"
            if node.state == "idle" and self.rng.random() < evict:
                self._lose(node)
                node.state, node.worker = "preempted", "error"
                node.ready_at = self.now + self.capacity_back
                continue
            if node.task is not None and self.now >= node.ends:
                job, frame = node.task
                node.task = None
                if frame >= 0:
                    job.running.discard(frame)
                    job.done += 1
                    if job.done == len(job.frame_seconds):
                        job.video = "queued"
                else:
                    job.video, job.finished = "done", self.now
            if node.state == "idle" and node.worker == "awake" and node.task is None:
                if node.lazy_offline:
                    node.worker, node.lazy_offline = "offline", False
                elif (found := self._next()) is not None:
                    job, frame = found
                    seconds = job.frame_seconds[frame] if frame >= 0 else VIDEO
                    node.task, node.ends = found, self.now + seconds
                    if frame >= 0:
                        job.running.add(frame)
            if node.state != "preempted":
                self.billed += STEP
            if node.task is not None:
                self.rendered += STEP
                busy += 1
        if self.now % 60 == 0:
            up = sum(n.state == "idle" for n in self.nodes.values())
            self.cpu.append(busy / up if up else 0.0)

    def done(self) -> bool:
        return all(j.finished is not None for j in self.jobs)


# -- the three ways to scale --------------------------------------------------------


def fleet_scale(bounds: Bounds, every: float) -> Callable[[Farm], None]:
    """fleet scale: its own deciders, every ``every`` seconds."""
    memory = Memory()

    def round_(farm: Farm) -> None:
        nonlocal memory
        if farm.now % every:
            return
        queue, idle = _queue(farm)
        demand = assess(queue, idle)
        nodes = tuple(
            SpotNode(
                n.id,
                n.state,
                _worker(n),
                n.task is not None,
                False,
                n.id in demand.unfit,
            )
            for n in farm.nodes.values()
        )
        steady = farm.now >= farm.resizing_until
        view = ScaleView(
            farm.now, len(farm.nodes), steady, False, demand.total, nodes, 0, demand.held
        )
        plan = decide(view, bounds, memory)
        memory = plan.memory
        for step in plan.steps:
            if step.act is Act.RESIZE and step.target is not None:
                farm.add(step.target - len(farm.nodes))
            elif step.act is Act.REMOVE:
                farm.remove(list(step.nodes))
            elif step.act in (Act.DRAIN, Act.UNDRAIN):
                for node_id in step.nodes:
                    farm.nodes[node_id].lazy_offline = step.act is Act.DRAIN
            elif step.act is Act.REBOOT:
                for node_id in step.nodes:
                    node = farm.nodes[node_id]
                    node.state, node.worker, node.ready_at = (
                        "starting",
                        "",
                        farm.now + farm.start_up,
                    )

    return round_


def _worker(node: Node) -> Optional[ManagerWorker]:
    if not node.worker:
        return None
    requested = "offline" if node.lazy_offline else None
    return ManagerWorker(node.id, node.id, node.worker, "3.9", True, requested, node.lazy_offline)


def _queue(farm: Farm) -> tuple[QueueRead, dict[str, bool]]:
    """The queue as the jobs API shows it, and the workers as fleet sees them."""
    owner = {(n.task[0].id, n.task[1]): n.id for n in farm.nodes.values() if n.task is not None}
    video = {"waiting": "queued", "queued": "queued", "running": "active", "done": "completed"}
    jobs = []
    for job in farm.arrived():
        queued = set(job.queued)
        tasks = [
            TaskRead(
                f"{job.id}-{i}",
                f"render-{i}",
                "queued" if i in queued else "active" if i in job.running else "completed",
                "blender",
                i,
                owner.get((job.id, i)),
            )
            for i in range(len(job.frame_seconds))
        ]
        last = len(tasks)
        status = video[job.video]
        tasks.append(
            TaskRead(
                f"{job.id}-v", "preview-video", status, "ffmpeg", last, owner.get((job.id, -1))
            )
        )
        jobs.append(JobRead(job.id, job.id, "active", None, tuple(tasks)))
    idle = {
        n.id: n.worker == "awake" and n.task is None and not n.lazy_offline
        for n in farm.nodes.values()
        if n.worker
    }
    return QueueRead(tuple(jobs)), idle


def fixed(size: int) -> Callable[[Farm], None]:
    """A pool of ``size`` nodes all day."""

    def round_(farm: Farm) -> None:
        if not farm.nodes:
            farm.add(size)

    return round_


def autoscale(most: int) -> Callable[[Farm], None]:
    """The CPU formula, every 5 minutes (see the module docstring)."""

    def round_(farm: Farm) -> None:
        if not farm.nodes:
            farm.add(1)
        if farm.now % 300:
            return
        current = len(farm.nodes)
        target = current
        if farm.cpu[-10:] and min(farm.cpu[-10:]) > 0.7:
            target = max(current + 1, math.ceil(current * 1.1))
        if len(farm.cpu) >= 60 and sum(farm.cpu[-60:]) / 60 < 0.2:
            target = min(current - 1, math.floor(current * 0.9))
        target = max(1, min(most, target))
        if target > current:
            farm.add(target - current)
        elif target < current:
            farm.remove(farm.rng.sample(sorted(farm.nodes), current - target))

    return round_


def run(policy: Callable[[Farm], None], args: argparse.Namespace, seed: int) -> Farm:
    """One day scaled by ``policy``, until its last job is done."""
    farm = Farm(
        random.Random(seed + 1000),
        make_day(random.Random(seed)),
        args.start_up * 60,
        args.evictions_per_hour,
        args.capacity_back * 60,
    )
    while not farm.done() and farm.now < 3 * 24 * HOUR:
        policy(farm)
        farm.step()
    return farm


def _clock(seconds: float) -> str:
    days = int(seconds // (24 * HOUR))
    clock = f"{int(seconds % (24 * HOUR) // HOUR):02d}:{int(seconds % HOUR // 60):02d}"
    return clock + (f" (+{days} d)" if days else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the first day's random seed (1)")
    parser.add_argument("--days", type=int, default=5, help="days replayed, each its own (5)")
    parser.add_argument("--evictions-per-hour", type=float, default=0.05, help="per node (0.05)")
    parser.add_argument("--start-up", type=float, default=5.0, help="minutes a node takes (5)")
    parser.add_argument(
        "--capacity-back", type=float, default=15.0, help="minutes an evicted node is away (15)"
    )
    parser.add_argument("--max", type=int, default=60, help="most nodes; the fixed pool (60)")
    parser.add_argument("--idle-minutes", type=float, default=2.0, help="scale's (2)")
    parser.add_argument("--every", type=float, default=30.0, help="scale's (30)")
    parser.add_argument("--per-node", type=int, default=1, help="scale's (1)")
    args = parser.parse_args()
    scale = f"fleet scale --idle-minutes {args.idle_minutes:g} --every {args.every:g}"
    policies: dict[str, Callable[[], Callable[[Farm], None]]] = {
        scale: lambda: fleet_scale(
            Bounds(0, args.max, args.per_node, args.idle_minutes), args.every
        ),
        f"fixed pool of {args.max} nodes": lambda: fixed(args.max),
        f"autoscale on CPU (at most {args.max})": lambda: autoscale(args.max),
    }
    seeds = range(args.seed, args.seed + args.days)
    results = {name: [run(make(), args, s) for s in seeds] for name, make in policies.items()}
    days = next(iter(results.values()))
    jobs = sum(len(d.jobs) for d in days)
    frames = sum(len(j.frame_seconds) for d in days for j in d.jobs)
    work = sum(sum(j.frame_seconds) for d in days for j in d.jobs) / HOUR
    print(
        f"{args.days} day(s) of a Spot farm: {jobs} jobs, {frames} frames, {work:.0f} node-hours "
        f"of rendering; evictions {args.evictions_per_hour:g}/node/hour, start-up "
        f"{args.start_up:g} min, at most {args.max} nodes"
    )
    header = f"{'billed node-h':>13} {'rendered':>9} {'idle':>6} {'frames again':>12}"
    print(f"{'':42} {header} {'job, mean':>10} {'last job done':>14}")
    totals = {}
    for name, farms in results.items():
        billed = sum(f.billed for f in farms)
        share = sum(f.rendered for f in farms) / billed if billed else 0.0
        again = sum(f.again for f in farms)
        last = sum(max(j.finished or f.now for j in f.jobs) for f in farms) / len(farms)
        turnaround = [(j.finished or f.now) - j.arrival for f in farms for j in f.jobs]
        mean = sum(turnaround) / len(turnaround) / 60
        totals[name] = (billed, share)
        row = f"{billed / HOUR:13.1f} {share:9.1%} {1 - share:6.1%} {again:12d}"
        print(f"{name:42} {row} {mean:6.0f} min {_clock(last):>14}")
    (fleet_billed, fleet_share), *baselines = totals.values()
    met = fleet_share >= 0.9 and all(fleet_billed < b for b, _ in baselines)
    print(
        "(job, mean: from a job's arrival to its video; last job done: when each day's last"
        " job was done, the mean over the days)"
    )
    verdict = "met" if met else "NOT met"
    print(f"goal, at most 10 % idle and less billed than both baselines: {verdict}")


if __name__ == "__main__":
    main()
