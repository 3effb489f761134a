"""fleet status as an operator and a monitoring system read it: unknown when the
Manager cannot say, a killed agent shown stale, an exit code for "needs attention",
narrow node ids, JSON with ISO 8601 times; state files of older and newer agents;
and a worker name every node shares, told apart by the ids each node records."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from node_agent.fleet.agentfile import NotAStateFile, parse_agent
from node_agent.fleet.status import short_id
from node_agent.fleet.times import iso
from node_agent.sim.standins.batch_pool import ComputeNode, StartTaskInfo
from tests.fleet_farm import Farm, fleet


def _rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("tvmps_")}


def test_without_an_answer_from_the_manager_healthy_nodes_are_unknown(
    farm: Farm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = farm.node(agent={})
    farm.worker(node)
    monkeypatch.delenv("FLAMENCO_MANAGER_URL")
    code, out, _ = fleet(capsys, "status", "--wide")
    assert code == 0  # nobody asked the Manager: nothing to alarm about
    assert _rows(out)[node.id].endswith("unknown") and "starting" not in _rows(out)[node.id]
    monkeypatch.setenv("FLAMENCO_MANAGER_URL", farm.manager.url)
    farm.manager.stop()  # the Manager is down
    code, out, _ = fleet(capsys, "status", "--wide")
    assert code == 6 and _rows(out)[node.id].endswith("unknown")
    assert "Manager unknown" in out.splitlines()[-1]
    code, out, _ = fleet(capsys, "status", "--json")
    document = json.loads(out)
    assert code == 6 and document["attention"][0].startswith("the Manager: ")


def test_a_killed_agent_is_stale_not_running(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    """node-agent is the start task: once Batch says it ended, a state file that says
    running is the last word of a killed agent."""
    killed = farm.node(start_task=StartTaskInfo("completed", -9), agent={})
    _, out, _ = fleet(capsys, "status", "--wide")
    row = _rows(out)[killed.id]
    assert "stale: running, " in row and " old" in row and row.endswith("failed")
    note = f"stale: {killed.id}: its state file is the last word of a node-agent that ended"
    assert f"{note} (start task exit -9) while running" in out
    earlier = farm.node()  # its start task ran again since the file was written
    assert earlier.root is not None and earlier.start_task is not None
    _iso_state(earlier.root, farm.name(earlier), updated_at=iso(time.time() - 3600))
    earlier.start_task.started = time.time() - 600
    farm.worker(earlier)
    code, out, _ = fleet(capsys, "status", "--wide")
    assert code == 6 and _rows(out)[earlier.id].endswith("stale")
    assert "its state file is from an earlier run of the start task" in out
    document = json.loads(fleet(capsys, "status", "--json")[1])
    nodes = {n["id"]: n for n in document["nodes"]}
    assert nodes[killed.id]["agent"]["stale"].startswith("the last word of a node-agent")
    assert f"{earlier.id}: stale" in document["attention"]


def test_exit_6_only_when_a_node_needs_attention(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = farm.node(agent={})
    farm.worker(healthy)
    assert fleet(capsys, "status")[0] == 0
    looping = farm.node(agent={"crash_loop": True, "restarts": 9})
    farm.worker(looping)
    code, out, _ = fleet(capsys, "status")
    assert code == 6 and "1 node(s) need attention" in out.splitlines()[-1]
    document = json.loads(fleet(capsys, "status", "--json")[1])
    assert document["attention"] == [f"{looping.id}: crash-looping"]


def test_narrow_ids_by_default_whole_ids_in_wide_and_json(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    node = farm.node(agent={})
    farm.worker(node)
    _, out, _ = fleet(capsys, "status")
    short = short_id(node.id)
    assert len(short) == 12 and node.id.startswith(f"tvmps_{short}")
    assert out.splitlines()[1].startswith(short + " ") and node.id not in out
    assert max(len(line) for line in out.splitlines()[:2]) < 150
    _, out, _ = fleet(capsys, "status", "--wide")
    assert node.id in out
    document = json.loads(fleet(capsys, "status", "--json")[1])
    assert document["nodes"][0]["id"] == node.id and document["nodes"][0]["short_id"] == short


def _iso_state(root: Path, name: str, **changes: Any) -> None:
    """A state file as a newer node-agent writes it: times in ISO 8601."""
    now = iso(time.time())
    document = {
        "schema": 1,
        "agent_pid": 4242,
        "agent_create_time": now,
        "phase": "running",
        "started_at": now,
        "updated_at": now,
        "last_exit_at": "2026-01-01T10:00:00.25+01:00",
        "flavour": "v3",
        "worker_name": name,
        "worker_executable": "/w",
        "worker_dir": "/d",
        "config_path": "/c",
        "restarts": 2,
        "a_field_from_the_future": [1, 2],
        **changes,
    }
    path = root / "shared" / ".node-agent" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_state_files_of_older_and_newer_agents_read_alike(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    older = farm.node(agent={"restarts": 2})  # Unix seconds, as the runtime writes them today
    newer = farm.node()
    assert newer.root is not None
    _iso_state(newer.root, farm.name(newer))
    for node in (older, newer):
        farm.worker(node)
    code, out, err = fleet(capsys, "status", "--json")
    assert code == 0, err
    nodes = {n["id"]: n for n in json.loads(out)["nodes"]}
    for node in (older, newer):
        agent = nodes[node.id]["agent"]
        assert agent["phase"] == "running" and agent["restarts"] == 2
        assert agent["updated_at"].endswith("Z") and agent["stale"] is None
        assert nodes[node.id]["health"] == "idle"
        assert nodes[node.id]["worker"]["last_seen"].endswith("Z")
    assert nodes[newer.id]["agent"]["last_exit_at"] == "2026-01-01T09:00:00.250Z"
    with pytest.raises(NotAStateFile, match='updated_at: expected a time, found "yesterday"'):
        parse_agent(
            json.dumps(
                {"schema": 1, "phase": "x", "worker_name": "n", "updated_at": "yesterday"}
            ).encode()
        )


def _ids_file(node: ComputeNode, *ids: str) -> None:
    assert node.root is not None
    path = node.root / "shared" / ".node-agent" / "worker-ids"
    path.write_text("".join(f"{i}\n" for i in ids))


def test_one_worker_name_on_every_node_is_told_apart_by_worker_ids(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three nodes whose workers are all named "blender" (an operator's worker_name):
    the Manager's entries are matched by the ids each node recorded; without those
    lists nothing is said of the nodes, and nothing is done to them."""
    from tests.fleet_farm import Worker

    nodes = [farm.node(agent={"worker_name": "blender"}) for _ in range(3)]
    workers = [Worker(farm.manager, "blender").wake() for _ in nodes]
    farm.manager.add_task("frame 1", "misc")
    workers[1].take_task()
    _, out, _ = fleet(capsys, "status", "--wide")
    rows = _rows(out)
    assert all(rows[n.id].endswith("unknown") for n in nodes), out
    assert "3 idle" not in out and "worker-ids file could not be read" in out
    for node, worker in zip(nodes, workers):
        _ids_file(node, "0b3f8d16-0000-4000-8000-000000000000", worker.id)
    _, out, _ = fleet(capsys, "status", "--wide")
    rows = _rows(out)
    assert rows[nodes[1].id].endswith("frame 1  rendering")
    assert rows[nodes[0].id].endswith("idle") and rows[nodes[2].id].endswith("idle")


def test_scale_never_asks_one_worker_twice_and_removes_the_surplus(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fleet_farm import Worker

    nodes = [farm.node(agent={"worker_name": "blender"}) for _ in range(3)]
    workers = [Worker(farm.manager, "blender").wake() for _ in nodes]
    scale = ("scale", "--min", "0", "--max", "3", "--idle-minutes", "0", "--apply")
    code, _, err = fleet(capsys, *scale)
    assert code == 0, err
    assert not farm.manager.server.received("POST", "/api/v3/worker-mgt")  # blind: nothing
    for node, worker in zip(nodes, workers):
        _ids_file(node, worker.id)
    code, _, err = fleet(capsys, *scale)
    asked = [r.path for r in farm.manager.server.received("POST", "/api/v3/worker-mgt")]
    assert sorted(asked) == sorted(f"/api/v3/worker-mgt/workers/{w.id}/setstatus" for w in workers)
    for worker in workers:
        worker.sign_off()
    code, _, err = fleet(capsys, *scale)
    [removal] = farm.batch.received("POST", "/pools/render/removenodes")
    assert sorted(removal.json()["nodeList"]) == sorted(n.id for n in nodes)
