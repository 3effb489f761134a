"""fleet roll's decisions (never a render killed, never more than --at-once nodes out
of service, a node that does not come back stops the roll) and its edge: the pool's
package references changed through the SDK's Update Pool, the roll's file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent.fleet.roll import RollAct, RollMemory, RollNode, RollView, decide_roll
from node_agent.fleet.roller import load_roll, save_roll
from node_agent.manager.api import ManagerWorker
from tests.fleet_farm import POOL, Farm, fleet

SINCE = 1_800_000_000.0
APP = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/a/applications/"


def node(
    i: int,
    status: Optional[str] = "awake",
    busy: bool = False,
    *,
    state: str = "idle",
    booted: float = SINCE - 3600,
    requested: Optional[str] = None,
) -> RollNode:
    worker = None
    if status is not None:
        worker = ManagerWorker(f"w{i}", f"n{i}", status, "3.9", True, requested=requested)
    return RollNode(f"node-{i}", state, booted, worker, busy)


def acts(plan: object) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.act.value, s.nodes) for s in plan.steps]  # type: ignore[attr-defined]


def test_idle_workers_go_first_and_only_offline_nodes_are_rebooted() -> None:
    nodes = (node(0, busy=True), node(1), node(2, "offline"), node(3, booted=SINCE + 5))
    plan = decide_roll(RollView(SINCE + 10, nodes), RollMemory(SINCE), 2, 600)
    # node-1's worker is idle: asked to wind down; node-2's worker is offline already:
    # rebooted at once; node-3 booted since the roll began; node-0 renders: later.
    assert acts(plan) == [("drain", ("node-1",)), ("reboot", ("node-2",))]
    assert plan.left == 3 and not plan.finished
    later = (node(0, busy=True), node(1, "offline"), node(2, "offline", state="rebooting"))
    plan = decide_roll(RollView(SINCE + 20, (*later, nodes[3])), plan.memory, 2, 600)
    assert acts(plan) == [("reboot", ("node-1",)), ("wait", ("node-2",))]
    back = (node(0, busy=True), node(1, "offline", state="rebooting"), node(2, "awake"))
    plan = decide_roll(RollView(SINCE + 30, (*back, nodes[3])), plan.memory, 2, 600)
    # node-2 is back: its slot goes to node-0, whose worker is only asked (it renders).
    assert acts(plan)[0] == ("drain", ("node-0",)) and "node-2" in plan.memory.done


def test_a_node_that_does_not_come_back_stops_the_roll() -> None:
    memory = RollMemory(SINCE, {}, {"node-0": SINCE + 10})
    nodes = (node(0, "offline"), node(1))
    waiting = decide_roll(RollView(SINCE + 100, nodes), memory, 1, 600)
    assert waiting.stuck is None and acts(waiting) == [("wait", ("node-0",))]
    stuck = decide_roll(RollView(SINCE + 700, nodes), memory, 2, 600)
    assert stuck.stuck is not None and "node-0" in stuck.stuck and not stuck.finished
    assert all(s.act is RollAct.WAIT for s in stuck.steps)  # node-1 is not touched


def test_nodes_heal_owns_and_nodes_of_unknown_workers_are_left_alone() -> None:
    nodes = (
        node(0, state="unusable"),
        node(1, state="preempted"),
        RollNode("node-2", "idle", SINCE - 1, None, False, unknown=True),
        node(3, state="starting"),
    )
    plan = decide_roll(RollView(SINCE + 1, nodes), RollMemory(SINCE), 4, 600)
    assert plan.steps == () and set(plan.left_alone) == {"node-0", "node-1", "node-2", "node-3"}
    assert plan.left == 0 and plan.finished  # nothing a roll can do is left


@st.composite
def rounds(draw: st.DrawFn) -> tuple[RollView, RollMemory, int]:
    nodes = []
    for i in range(draw(st.integers(0, 8))):
        status = draw(st.sampled_from(["awake", "asleep", "offline", "error", None]))
        busy = status in ("awake", "asleep") and draw(st.booleans())
        state = draw(st.sampled_from(["idle", "running", "rebooting", "unusable", "starting"]))
        booted = draw(st.sampled_from([SINCE - 10, SINCE + 10, None]))
        nodes.append(node(i, status, busy, state=state, booted=booted))  # type: ignore[arg-type]
    ids = st.sampled_from([f"node-{i}" for i in range(8)])
    draining = draw(st.dictionaries(ids, st.just(SINCE + 1), max_size=3))
    rebooting = draw(st.dictionaries(ids, st.just(SINCE + 1), max_size=3))
    memory = RollMemory(SINCE, draining, {k: v for k, v in rebooting.items() if k not in draining})
    return RollView(SINCE + 50, tuple(nodes)), memory, draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_never_a_render_killed_never_more_than_at_once(
    case: tuple[RollView, RollMemory, int],
) -> None:
    view, memory, at_once = case
    plan = decide_roll(view, memory, at_once, 600)
    by_id = {n.id: n for n in view.nodes}
    for step in plan.steps:
        if step.act is RollAct.REBOOT:
            for node_id in step.nodes:
                n = by_id[node_id]
                assert not n.busy and n.state in ("idle", "running")
                assert n.worker is None or n.worker.status in ("offline", "error", "")
    started = [i for s in plan.steps if s.act is not RollAct.WAIT for i in s.nodes]
    before = len({i for i in [*memory.draining, *memory.rebooting] if i in by_id})
    in_flight = len(plan.memory.draining) + len(plan.memory.rebooting)
    assert in_flight <= max(at_once, before)
    assert len(set(started)) == len(started)


def test_the_roll_file_round_trips_in_iso_8601(tmp_path: Path) -> None:
    memory = RollMemory(SINCE, {"a": SINCE + 1.5}, {"b": SINCE + 2}, frozenset({"c"}))
    path = tmp_path / "roll.json"
    save_roll(path, memory)
    assert '"since": "2027-01-15T08:00:00.000Z"' in path.read_text()
    assert load_roll(path) == memory


def _pool_with_packages(farm: Farm, command: str) -> None:
    farm.batch.add_application("flamenco-worker", {"3.5": None, "3.6": None}, default="3.5")
    farm.batch.add_application("blender", {"4.2": None}, default="4.2")
    pool = farm.batch.account.pools[POOL]
    pool.references = [
        {"applicationId": APP + "blender"},
        {"applicationId": APP + "flamenco-worker"},
    ]
    pool.start_task = {"commandLine": command}


def test_roll_sets_the_pools_package_references_and_warns_of_the_variable(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    _pool_with_packages(farm, "/bin/sh -c 'exec python3 $AZ_BATCH_APP_PACKAGE_flamenco_worker/x'")
    node = farm.node(agent={})
    worker = farm.worker(node)
    code, out, err = fleet(capsys, "roll", "--package", "flamenco-worker=3.6")
    assert code == 0 and "would set the pool's packages: blender (default version), " in out
    assert (
        "flamenco-worker 3.6" in out
        and f"would take offline lazily the worker(s) of {node.id}" in out
    )
    assert "Batch sets only for a package referenced without a version" in err
    assert not farm.batch.received("PATCH", "/pools")
    worker.sign_off()  # offline already: rebooted at once, but never signs on again
    apply = ("--apply", "--every", "0.01", "--back-within", "0.001")
    code, out, err = fleet(capsys, "roll", "--package", "flamenco-worker=3.6", *apply)
    assert code == 1 and f"roll: stopped: node {node.id} is not back" in err
    [patch] = farm.batch.received("PATCH", f"/pools/{POOL}")
    assert patch.json() == {
        "applicationPackageReferences": [
            {"applicationId": APP + "blender"},
            {"applicationId": APP + "flamenco-worker", "version": "3.6"},
        ]
    }
    assert node.packages["flamenco-worker"].version == "3.6"  # rebooted onto it
    # The roll stopped but is kept: another --package is refused while it is under way.
    code, _, err = fleet(capsys, "roll", "--package", "flamenco-worker=3.5", "--apply")
    assert code == 3 and "a roll is under way since" in err


def test_roll_refuses_a_package_the_pool_does_not_reference(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    _pool_with_packages(farm, "run")
    code, _, err = fleet(capsys, "roll", "--package", "houdini=20", "--package", "=x")
    assert code == 3 and "'=x': expected ID=VERSION or ID" in err
