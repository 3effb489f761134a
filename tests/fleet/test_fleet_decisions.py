"""fleet's pure decisions: which worker is a node's, what is stale, what heal does,
and how scale moves the pool (hypothesis for the bounds and the safety rules)."""

from __future__ import annotations

from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent.fleet.agentfile import AgentView
from node_agent.fleet.cleanup import heal, repair_for, stale_workers
from node_agent.fleet.model import (
    AgentRead,
    JobRead,
    NodeView,
    PoolView,
    QueueRead,
    Snapshot,
    StartTaskView,
    TaskRead,
    current_entry,
)
from node_agent.fleet.scaling import (
    Act,
    Bounds,
    Memory,
    ScaleView,
    SpotNode,
    decide,
    out_of_service,
    removable,
)
from node_agent.fleet.status import document, join, render, summary
from node_agent.fleet.times import seconds
from node_agent.manager.api import ManagerWorker
from node_agent.node.layout import default_worker_name, is_default_worker_name

POOL = "render"
TVMPS = "tvmps_" + "ab12cd34ef56" + "0" * 52 + "_p"


def worker(
    name: str, status: str = "awake", seen: Optional[str] = None, wid: str = ""
) -> ManagerWorker:
    return ManagerWorker(
        wid or f"id-{name}-{status}-{seen}", name, status, "3.6", True, last_seen=seen
    )


def agent(name: str, ids: Optional[frozenset[str]] = None, **changes: object) -> AgentRead:
    state = AgentView("running", name, 1.0, 1.0)
    return AgentRead(state=AgentView(**{**state.__dict__, **changes}), worker_ids=ids)  # type: ignore[arg-type]


def pool(spot: int = 0) -> PoolView:
    return PoolView(POOL, "steady", 0, spot, 0, spot, False)


def running(busy: dict[str, str]) -> QueueRead:
    """A queue in which each worker of ``busy`` runs the task named there."""
    tasks = tuple(
        TaskRead(f"t-{worker}", name, "active", "blender", i, worker)
        for i, (worker, name) in enumerate(busy.items())
    )
    return QueueRead((JobRead("job", "a job", "active", None, tasks),))


def look(
    nodes: list[NodeView],
    workers: list[ManagerWorker],
    agents: Optional[dict[str, AgentRead]] = None,
    busy: Optional[dict[str, str]] = None,
) -> Snapshot:
    queue = running(busy or {})
    return Snapshot(pool(len(nodes)), tuple(nodes), agents or {}, tuple(workers), queue)


def test_worker_names_of_this_pool_only() -> None:
    assert default_worker_name(POOL, TVMPS, "") == "render-ab12cd34ef56"
    assert is_default_worker_name(POOL, "render-ab12cd34ef56")
    assert is_default_worker_name(
        POOL, default_worker_name(POOL, "tvm-1695681911_1-20161122t193202z", "")
    )
    assert is_default_worker_name(POOL, "render-tvm-123_4-5")
    # Another pool whose id starts like this one's, and names someone chose.
    assert not is_default_worker_name(POOL, "render-gpu-ab12cd34ef56")
    assert not is_default_worker_name(POOL, "render-blender-box")
    assert not is_default_worker_name(POOL, "other-ab12cd34ef56")


_POOL_IDS = st.text("abcdefghijklmnopqrstuvwxyzABC0123456789_-", min_size=1, max_size=64)
_NODE_IDS = st.one_of(
    # Batch's node ids: tvmps_<64 hex>_d|p today, tvm-<n>_<n>-<date> before, and any
    # id over 32 characters (kept short with a hash).
    st.builds(
        lambda h, kind: f"tvmps_{h}_{kind}",
        st.text("0123456789abcdef", min_size=64, max_size=64),
        st.sampled_from("dp"),
    ),
    st.builds(  # Batch's older ids: tvm-383584635_1-20190115t092314z
        lambda a, b, when: f"tvm-{a}_{b}-{when:%Y%m%dt%H%M%S}z",
        st.integers(0, 10**10),
        st.integers(1, 99),
        st.datetimes(),
    ),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=33, max_size=80),
)


@given(_POOL_IDS, _NODE_IDS)
def test_every_default_worker_name_is_known_as_one(pool_id: str, node_id: str) -> None:
    name = default_worker_name(pool_id, node_id, "")
    assert is_default_worker_name(pool_id, name)
    # A pool whose id starts like this one's (within the 32 characters a name keeps).
    other = default_worker_name(pool_id[:28] + "-gpu", node_id, "")
    assert not is_default_worker_name(pool_id[:28], other)


def test_the_current_entry_is_live_then_last_seen() -> None:
    old = worker("n", "offline", "2026-01-01T10:00:00Z")
    newer = worker("n", "offline", "2026-01-01T11:00:00.5+01:00")  # 10:00:00.5 UTC
    live = worker("n", "awake", "2025-01-01T00:00:00Z")
    assert current_entry([old, newer]) is newer
    assert current_entry([old, live, newer]) is live
    assert current_entry([]) is None
    assert seconds("2026-01-01T10:00:00.123456789Z") == seconds("2026-01-01T11:00:00.123456+01:00")
    assert seconds("yesterday") is None


def test_stale_entries_gone_nodes_and_duplicates() -> None:
    node = NodeView(TVMPS, False, "idle")
    custom = NodeView("tvmps_" + "9" * 64 + "_p", False, "idle")
    current = worker("render-ab12cd34ef56", "awake", "2026-01-01T10:00:00Z")
    duplicate = worker("render-ab12cd34ef56", "offline", "2026-01-01T09:00:00Z")
    gone = worker("render-0123456789ab", "error")
    gone_live = worker("render-fedcba987654", "awake")
    named = worker("blender-box-1", "awake")  # a custom worker_name, from the state file
    named_dup = worker("blender-box-1", "offline")
    other_pool = worker("render-gpu-0123456789ab", "offline")
    snapshot = look(
        [node, custom],
        [current, duplicate, gone, gone_live, named, named_dup, other_pool],
        {custom.id: agent("blender-box-1")},
    )
    stale = {s.worker.id: s for s in stale_workers(snapshot)}
    assert set(stale) == {duplicate.id, gone.id, gone_live.id, named_dup.id}
    assert stale[duplicate.id].removable and stale[gone.id].removable
    assert stale[named_dup.id].removable and current.id in stale[duplicate.id].reason
    assert not stale[gone_live.id].removable and "left" in stale[gone_live.id].reason


def test_heal_reboots_failed_start_tasks_and_removes_what_batch_cannot_reboot() -> None:
    failed = NodeView("a", False, "idle", StartTaskView("completed", 1, "exit code failure"))
    stuck = NodeView("b", True, "starttaskfailed", StartTaskView("completed", 2))
    unusable = NodeView("c", False, "unusable", errors=("DiskFull: the disk is full",))
    busy_unusable = NodeView("d", False, "unusable")
    gave_up = NodeView("e", False, "idle", StartTaskView("completed", 1))
    healthy = NodeView("f", False, "idle", StartTaskView("running"))
    drained = NodeView("g", False, "idle", StartTaskView("completed", 0))
    preempted = NodeView("h", False, "preempted", StartTaskView("completed", 1))
    nodes = [failed, stuck, unusable, busy_unusable, gave_up, healthy, drained, preempted]
    busy_name = default_worker_name(POOL, "d", "")
    snapshot = look(
        nodes,
        [worker(busy_name, wid="w-d")],
        {"e": agent("x", crash_loop=True, last_exit_reason="exit 1 after 0.2 s")},
        busy={"w-d": "frame 7"},
    )
    repairs, skipped = heal(snapshot)
    # Batch reboots (and reimages) only idle or running nodes: the others are removed.
    assert [(r.node_id, r.action) for r in repairs] == [
        ("a", "reboot"),
        ("b", "remove"),
        ("c", "remove"),
        ("e", "reboot"),
    ]
    assert "DiskFull" in repairs[2].reason and "gave up" in repairs[3].reason
    assert [(s.node_id, "frame 7" in s.reason) for s in skipped] == [("d", True)]
    no_manager = Snapshot(snapshot.pool, snapshot.nodes, snapshot.agents, None, None, "down")
    repairs, skipped = heal(no_manager)
    assert "c" not in [r.node_id for r in repairs] and {s.node_id for s in skipped} == {"c", "d"}
    assert repair_for(drained, None) is None


def test_status_rows_and_summary() -> None:
    rendering = NodeView(TVMPS, False, "idle", StartTaskView("running"))
    preempted = NodeView("tvmps_" + "1" * 64 + "_p", False, "preempted")
    unreadable = NodeView("tvmps_" + "2" * 64 + "_d", True, "idle", StartTaskView("running"))
    name = default_worker_name(POOL, TVMPS, "")
    snapshot = look(
        [rendering, preempted, unreadable],
        [worker(name, wid="w1", seen="2026-01-01T10:00:00Z")],
        {
            TVMPS: agent(name),
            unreadable.id: AgentRead(error="read x: HTTP 404 FileNotFound"),
        },
        busy={"w1": "frame 1"},
    )
    status = join(snapshot)
    assert [r.health for r in status.rows] == ["rendering", "preempted", "starting"]
    line = summary(status)
    assert "3 nodes (1 dedicated, 2 Spot" in line and "1 rendering" in line
    assert "1 preempted" in line and "1 node(s) with an unreadable state file" in line
    text = render(status, now=seconds("2026-01-01T10:00:30Z"))
    assert "awake, seen 30 s ago" in text and "FileNotFound" in text


def test_status_shows_nodes_held_for_an_event_and_unfit_nodes() -> None:
    ids = ["tvmps_" + c * 64 + "_p" for c in "34"]
    nodes = [NodeView(i, False, "idle", StartTaskView("running")) for i in ids]
    names = [default_worker_name(POOL, i, "") for i in ids]
    snapshot = look(
        nodes,
        [worker(names[0], "offline"), worker(names[1], "asleep")],
        {
            ids[0]: agent(names[0], phase="waiting-for-platform", platform_event="Preempt P-1"),
            ids[1]: agent(names[1], unfit="disk: 0.2 GiB free, DiskFull below 1.0 GiB"),
        },
    )
    status = join(snapshot)
    assert [r.health for r in status.rows] == ["held", "unfit"]
    text = render(status, wide=True)
    assert f"held: {ids[0]}: the worker is stopped for Preempt P-1" in text
    assert f"unfit: {ids[1]}: disk: 0.2 GiB free" in text
    assert "1 held, 1 unfit" in summary(status)
    nodes_json = document(status)["nodes"]
    assert nodes_json[0]["agent"]["platform_event"] == "Preempt P-1"
    assert nodes_json[1]["agent"]["unfit"].startswith("disk")


# -- scaling --------------------------------------------------------------------

NOW = 1_800_000_000.0
BOUNDS = Bounds(0, 4, per_node=1, idle_minutes=10)


def spot(
    i: int, status: Optional[str] = "awake", busy: bool = False, **changes: object
) -> SpotNode:
    w = None if status is None else worker(f"n{i}", status, wid=f"w{i}")
    if w is not None and changes.pop("requested", False):
        w = ManagerWorker(w.id, w.name, w.status, w.version, True, requested="offline", lazy=True)
    return SpotNode(f"node-{i}", str(changes.pop("state", "idle")), w, busy, **changes)  # type: ignore[arg-type]


def view(
    nodes: list[SpotNode], demand: int, target: Optional[int] = None, **changes: object
) -> ScaleView:
    fields = {"now": NOW, "target": len(nodes) if target is None else target, "steady": True}
    fields.update(auto_scale=False, demand=demand, nodes=tuple(nodes))
    fields.update(changes)
    return ScaleView(**fields)  # type: ignore[arg-type]


def acts(plan_steps: object) -> list[tuple[str, tuple[str, ...], Optional[int]]]:
    return [(s.act.value, s.nodes, s.target) for s in plan_steps]  # type: ignore[attr-defined]


def test_grows_with_the_queue_within_bounds() -> None:
    plan = decide(view([], demand=9), Bounds(1, 4, per_node=2), Memory())
    assert acts(plan.steps) == [("resize", (), 4)]  # ceil(9/2) = 5, capped at 4
    plan = decide(view([], demand=0), Bounds(1, 4), Memory())
    assert acts(plan.steps) == [("resize", (), 1)]  # the minimum
    busy = decide(view([], demand=3, steady=False), BOUNDS, Memory())
    assert [s.act for s in busy.steps] == [Act.WAIT]


def test_shrinks_only_after_the_idle_time_and_never_a_rendering_node() -> None:
    nodes = [spot(0, busy=True), spot(1), spot(2, "asleep")]
    first = decide(view(nodes, demand=1), BOUNDS, Memory())
    assert [s.act for s in first.steps] == [Act.WAIT]
    assert first.memory.unused_since == {"node-1": NOW, "node-2": NOW}
    later = ScaleView(NOW + 601, 3, True, False, 1, tuple(nodes))
    plan = decide(later, BOUNDS, first.memory)
    # Two too many: the idle ones go offline lazily (asleep first), never node-0.
    assert acts(plan.steps) == [("drain", ("node-2", "node-1"), None)]
    assert plan.memory.draining == {"node-1", "node-2"}
    # Until their workers are offline, nothing is removed.
    pending = [spot(0, busy=True), spot(1, requested=True), spot(2, "offline")]
    plan = decide(ScaleView(NOW + 700, 3, True, False, 1, tuple(pending)), BOUNDS, plan.memory)
    assert acts(plan.steps) == [("remove", ("node-2",), None)]
    assert plan.memory.draining == {"node-1"}


def test_reaches_zero_after_the_idle_time() -> None:
    nodes = [spot(0, "offline"), spot(1, None, state="preempted")]
    hold = decide(view(nodes, demand=0), BOUNDS, Memory())
    assert [s.act for s in hold.steps] == [Act.WAIT]
    done = decide(ScaleView(NOW + 600, 2, True, False, 0, tuple(nodes)), BOUNDS, hold.memory)
    assert acts(done.steps) == [("remove", ("node-0", "node-1"), None)]
    assert decide(view([], demand=0, target=0), BOUNDS, done.memory).memory == Memory()


def test_changing_course_withdraws_lazy_stops_and_revives_drained_nodes() -> None:
    nodes = [spot(0, requested=True), spot(1, "offline")]
    memory = Memory({}, frozenset({"node-0", "node-1"}))
    plan = decide(view(nodes, demand=5), BOUNDS, memory)
    assert acts(plan.steps) == [
        ("undrain", ("node-0",), None),
        ("reboot", ("node-1",), None),
        ("resize", (), 4),
    ]
    assert plan.memory == Memory()


def test_after_a_lasting_surplus_a_node_that_runs_out_of_work_goes_at_once() -> None:
    """The queue is draining: the pool has had too many nodes for the idle time, so a
    node that has just finished its last task is not kept idle another idle time."""
    nodes = [spot(0, busy=True), spot(1), spot(2, busy=True)]
    first = decide(view(nodes, demand=2), BOUNDS, Memory())
    assert first.memory.surplus_since == NOW and first.memory.unused_since == {"node-1": NOW}
    later = [spot(0), spot(1), spot(2, busy=True)]  # node-0 just finished
    plan = decide(ScaleView(NOW + 600, 3, True, False, 1, tuple(later)), BOUNDS, first.memory)
    assert acts(plan.steps) == [("drain", ("node-0", "node-1"), None)]
    # Work came back between: the clock starts again.
    busy = decide(ScaleView(NOW + 300, 3, True, False, 3, tuple(later)), BOUNDS, first.memory)
    assert busy.memory.surplus_since is None


def test_an_autoscale_pool_is_left_alone() -> None:
    plan = decide(view([spot(0)], demand=0, auto_scale=True), BOUNDS, Memory({"node-0": 0.0}))
    assert [s.act for s in plan.steps] == [Act.WAIT] and "autoscale" in plan.steps[0].reason


STATUSES = st.sampled_from(["awake", "asleep", "offline", "error", "", "starting", None])
STATES = st.sampled_from(["idle", "running", "idle", "preempted", "unusable", "starting"])


RARELY = st.sampled_from([False, False, False, True])


@st.composite
def rounds(draw: st.DrawFn) -> tuple[ScaleView, Bounds, Memory]:
    minimum = draw(st.integers(0, 6))
    maximum, per_node = draw(st.integers(max(minimum, 1), 12)), draw(st.integers(1, 4))
    bounds = Bounds(minimum, maximum, per_node, draw(st.sampled_from([0, 10, 30])))
    nodes = []
    for i in range(draw(st.integers(0, 10))):
        status = draw(STATUSES)
        busy = status in ("awake", "asleep") and draw(st.booleans())
        changes = {"state": draw(STATES), "start_failed": draw(RARELY)}
        if status is not None and draw(RARELY):
            changes["requested"] = True
        nodes.append(spot(i, status, busy, **changes))
    target = draw(st.integers(0, 14))
    ids = st.sampled_from([f"node-{i}" for i in range(12)])
    unused = draw(st.dictionaries(ids, st.floats(NOW - 3600, NOW), min_size=4))
    draining = draw(st.sets(ids, max_size=4))
    scale = view(nodes, draw(st.integers(0, 16)), target, steady=draw(st.booleans()))
    surplus_since = draw(st.one_of(st.none(), st.floats(NOW - 3600, NOW)))
    return scale, bounds, Memory(unused, frozenset(draining), surplus_since)


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_never_beyond_the_bounds_and_never_a_render(case: tuple[ScaleView, Bounds, Memory]) -> None:
    scale, bounds, memory = case
    plan = decide(scale, bounds, memory)
    by_id = {n.id: n for n in scale.nodes}
    assert bounds.minimum <= plan.desired <= bounds.maximum
    removed = [i for s in plan.steps if s.act is Act.REMOVE for i in s.nodes]
    drained = [i for s in plan.steps if s.act is Act.DRAIN for i in s.nodes]
    for step in plan.steps:
        if step.act is Act.RESIZE:
            assert step.target is not None and scale.target < step.target <= bounds.maximum
            assert scale.steady
        if step.act in (Act.REMOVE, Act.DRAIN, Act.REBOOT):
            assert all(not by_id[i].busy for i in step.nodes)  # never a node that renders
    assert not removed or scale.steady
    assert all(removable(by_id[i]) for i in removed)
    # Never below the target (nor the minimum): no more nodes leave service for a
    # scale-in, or are removed, than the pool has too many.
    surplus = max(0, scale.target - plan.desired)
    assert len(removed) + len(drained) <= surplus
    assert len(plan.memory.draining) <= surplus
    # Only nodes unused for the idle time leave (or any unused one once the pool has
    # had too many nodes for that long), or nodes drained earlier that are out of
    # service now.
    limit = bounds.idle_minutes * 60
    lasting = memory.surplus_since is not None and scale.now - memory.surplus_since >= limit
    for node_id in [*removed, *drained]:
        if node_id in memory.draining:
            assert node_id in removed and out_of_service(by_id[node_id])
        else:
            since = memory.unused_since.get(node_id, scale.now)
            assert lasting or scale.now - since >= limit
    # The surplus clock runs only while there is a surplus, from its first round, and
    # stops when the round's removals end it.
    if surplus > (len(removed) if scale.steady else 0):
        assert plan.memory.surplus_since == (
            scale.now if memory.surplus_since is None else memory.surplus_since
        )
    else:
        assert plan.memory.surplus_since is None


def test_a_name_several_nodes_share_is_left_alone() -> None:
    first = NodeView("tvmps_" + "1" * 64 + "_p", False, "idle")
    second = NodeView("tvmps_" + "2" * 64 + "_p", False, "idle")
    live = worker("render", "awake", "2026-01-01T10:00:00Z")
    held = worker("render", "offline", "2026-01-01T09:00:00Z")  # another node's, rebooting
    snapshot = look([first, second], [live, held], {n.id: agent("render") for n in (first, second)})
    assert stale_workers(snapshot) == []
