"""``node-agent fleet`` end to end: the real azure-batch SDK against the stand-in
Batch service (nodes with real node roots and state files), and the stand-in
Manager with workers speaking its worker API."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from node_agent.cli import main
from node_agent.fleet import batch as fleet_batch
from node_agent.fleet.batch import BatchAccount, BatchService
from node_agent.fleet.scaler import ScaleSettings, load_memory, run_round
from node_agent.fleet.scaling import Bounds, Memory
from node_agent.manager.api import ManagerApi
from node_agent.sim.standins.batch import FakeBatch
from node_agent.sim.standins.batch_pool import StartTaskInfo
from tests.fleet_farm import POOL, SECRET, Farm, fleet
from tests.helpers import read_lines, tls_context


def test_status_of_a_mixed_pool(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    rendering = farm.node(agent={})
    idle = farm.node(dedicated=True, agent={"phase": "a-phase-from-a-newer-agent"})
    looping = farm.node(
        agent={"phase": "backing-off", "restarts": 9, "crash_loop": True, "last_exit_code": 1}
    )
    failed = farm.node(start_task=StartTaskInfo("completed", 1), agent={"phase": "stopped"})
    preempted = farm.node(state="preempted", agent={})
    unreadable = farm.node()  # the agent never wrote its state file
    farm.manager.add_task("frame 1", "misc")
    farm.worker(rendering).take_task()
    farm.worker(idle)
    farm.worker(looping)("POST", "sign-off")

    code, out, _ = fleet(capsys, "status", "--wide")
    assert code == 6  # nodes need attention: the failed one, the crash-looping one
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("tvmps_")}
    assert rows[rendering.id].endswith("frame 1  rendering")
    assert "dedicated" in rows[idle.id] and "a-phase-from-a-newer-agent" in rows[idle.id]
    assert rows[idle.id].endswith("idle") and "awake, seen" in rows[idle.id]
    assert "9 CRASH LOOP" in rows[looping.id] and rows[looping.id].endswith("crash-looping")
    assert "FAILED exit 1" in rows[failed.id] and rows[failed.id].endswith("failed")
    assert rows[preempted.id].endswith("preempted") and "unreadable" in rows[preempted.id]
    assert "unreadable" in rows[unreadable.id] and "no entry" in rows[unreadable.id]
    assert f"unreadable: {unreadable.id}: read shared/.node-agent/state.json: HTTP 404" in out
    assert f"failed: {failed.id}: its start task failed (exit 1" in out
    summary = out.splitlines()[-1]
    assert summary.startswith("pool render: 6 nodes (1 dedicated, 5 Spot; target 1 + 5, steady)")
    for count in ("1 rendering", "1 idle", "1 failed", "1 crash-looping", "1 preempted"):
        assert count in summary
    assert "0 stale worker(s)" in summary and "2 node(s) with an unreadable state file" in summary

    code, out, _ = fleet(capsys, "status", "--json")
    document = json.loads(out)
    assert code == 6
    assert document["attention"] == [f"{looping.id}: crash-looping", f"{failed.id}: failed"]
    nodes = {n["id"]: n for n in document["nodes"]}
    assert document["summary"]["rendering"] == 1 and document["pool"]["target_spot"] == 5
    assert nodes[looping.id]["agent"]["crash_loop"] is True
    assert nodes[looping.id]["worker"]["status"] == "offline"
    assert nodes[rendering.id]["worker_name"] == farm.name(rendering)
    assert nodes[rendering.id]["task"] == "frame 1" and nodes[rendering.id]["worker"]["last_seen"]
    start_task = nodes[failed.id]["start_task"]
    assert start_task.pop("started_at").endswith("Z")  # ISO 8601 UTC, as every time in it
    assert start_task == {
        "state": "completed",
        "exit_code": 1,
        "failure": "The task exited with an exit code representing a failure",
        "retries": 0,
    }
    assert nodes[failed.id]["repair"]["action"] == "reboot"
    assert nodes[unreadable.id]["agent"] is None and "404" in nodes[unreadable.id]["agent_error"]


def test_status_without_a_manager_and_watching(farm: Farm, tmp_path: Path) -> None:
    farm.node(agent={})
    env = {**os.environ, "FLAMENCO_MANAGER_URL": ""}
    command = [sys.executable, "-m", "node_agent", "fleet", "status", "--pool", POOL]
    watch = subprocess.Popen(
        [*command, "--json", "--watch", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    documents = [json.loads(line) for line in read_lines(watch.stdout, 2)]
    watch.send_signal(signal.SIGTERM)
    assert watch.wait(30) == 0, watch.stderr.read() if watch.stderr else ""
    assert all(d["manager_problem"] == "no Manager URL given" for d in documents)
    assert documents[0]["nodes"][0]["agent"]["phase"] == "running"


def test_prune_removes_exactly_the_stale_entries(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    node = farm.node(agent={})
    farm.node(agent={"worker_name": "blender-box-1"})  # a node with a custom worker name
    manager = farm.manager
    stale = {
        manager.add_worker(farm.name(node), "s", "offline"),  # an old entry of node's worker
        manager.add_worker("render-0123456789ab", "s", "offline"),  # its node is gone
        manager.add_worker("render-fedcba987654", "s", "error"),  # gone, timed out
        manager.add_worker("blender-box-1", "s", "offline"),  # a custom name's duplicate
    }
    current = farm.worker(node).id
    kept = {
        current,
        manager.add_worker("blender-box-1", "s", "awake"),  # the renamed node's worker
        manager.add_worker("render-aaaabbbbcccc", "s", "awake"),  # gone, not timed out yet
        manager.add_worker("render-gpu-0123456789ab", "s", "offline"),  # another pool's
        manager.add_worker("someone-elses-box", "s", "offline"),
    }
    for worker_id in kept:
        manager.worker(worker_id).last_seen = time.time()

    code, out, _ = fleet(capsys, "prune")
    assert code == 0 and out.count("would remove worker") == 4 and out.count("leave ") == 1
    assert {w.id for w in manager.live_workers()} == stale | kept  # a dry run changes nothing
    code, out, err = fleet(capsys, "prune", "--apply")
    assert code == 0 and out.endswith("5 stale worker entries, 4 removed\n")
    assert {w.id for w in manager.live_workers()} == kept
    assert err.count("removed worker") == 4 and "its node is no longer in pool render" in err
    code, out, _ = fleet(capsys, "prune", "--apply")
    assert "1 stale worker entries, 0 removed" in out  # only the live one is left


def test_heal_asks_batch_only_for_what_it_allows_in_each_node_state(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    """Idle nodes whose start task failed are rebooted; unusable and starttaskfailed
    nodes, which Batch neither reboots nor reimages, are removed and the pool is
    resized back to its targets; a node that renders is left."""
    failed = farm.node(start_task=StartTaskInfo("completed", 1), agent={})
    stuck = farm.node(state="starttaskfailed", start_task=StartTaskInfo("completed", 2))
    unusable = farm.node(state="unusable")
    rendering_unusable = farm.node(state="unusable", agent={})
    healthy = farm.node(agent={})
    farm.node(state="preempted")
    farm.node(start_task=StartTaskInfo("completed", 0))  # its worker was asked to stop
    farm.manager.add_task("frame 9", "misc")
    farm.worker(rendering_unusable).take_task()
    farm.worker(healthy)

    code, out, _ = fleet(capsys, "heal")
    assert code == 0 and "3 to repair" in out and not farm.batch.received("POST", "/pools")
    assert f"would reboot {failed.id}" in out and f"would remove {unusable.id}" in out
    assert f"would remove {stuck.id}" in out and "resize the pool back" in out
    code, out, err = fleet(capsys, "heal", "--apply")
    assert code == 0 and "4 failed node(s), 3 repaired" in out, err
    assert f"leave {rendering_unusable.id}: its worker still runs task 'frame 9'" in out
    posted = farm.batch.received("POST", "/pools/render")
    assert [r.path.split("?")[0] for r in posted] == [
        f"/pools/render/nodes/{failed.id}/reboot",
        "/pools/render/removenodes",
        "/pools/render/resize",
    ]
    assert sorted(posted[1].json()["nodeList"]) == sorted([stuck.id, unusable.id])
    assert posted[2].json() == {"targetDedicatedNodes": 0, "targetLowPriorityNodes": 7}
    assert "heal: reboot" in err and "its start task failed (exit 1" in err
    farm.batch.settle()
    pool = farm.batch.account.pools[POOL]
    assert stuck.id not in pool.nodes and unusable.id not in pool.nodes
    assert pool.target_spot == len(pool.nodes) == 7  # two fresh nodes in their place
    assert failed.state == "idle" and failed.start_task and failed.start_task.state == "running"


def _round(farm: Farm, now: float, bounds: Bounds, memory: Memory) -> Memory:
    service = BatchService(BatchAccount.from_environ(os.environ, None).client(), POOL)
    settings = ScaleSettings(bounds, ".node-agent-is-not-here", farm.roots / "memory.json", True)
    result = run_round(service, ManagerApi(farm.manager.url), settings, memory, now)
    assert result.ok
    return result.memory


def test_scale_grows_shrinks_idle_workers_only_and_reaches_zero(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    batch, manager = farm.batch, farm.manager
    for i in range(3):
        manager.add_task(f"frame {i}", "misc")
    args = ("scale", "--min", "0", "--max", "2", "--idle-minutes", "10")
    code, out, _ = fleet(capsys, *args)
    assert code == 0 and out.startswith("would resize the pool to 2 Spot node(s): grow")
    memory_file = farm.roots.parent / "state" / "node-agent" / "fleet-scale-render.json"
    assert not batch.received("POST", "/pools") and not memory_file.exists()  # only the plan
    code, _, err = fleet(capsys, *args, "--apply")
    assert code == 0 and "scale: resize the pool to 2 Spot node(s)" in err
    assert memory_file.exists()
    assert batch.received("POST", "/pools/render/resize")[-1].json() == {
        "targetDedicatedNodes": 0,
        "targetLowPriorityNodes": 2,  # three tasks, never beyond --max
    }
    batch.settle()
    first, second = batch.account.pools[POOL].nodes.values()
    a, b = farm.worker(first), farm.worker(second)
    task_a, task_b = a.take_task(), b.take_task()
    bounds, t0 = Bounds(0, 2, 1, idle_minutes=10), time.time()
    asked = lambda: manager.server.received("POST", "/api/v3/worker-mgt")  # noqa: E731
    removals = lambda: batch.received("POST", "/pools/render/removenodes")  # noqa: E731

    b.finish(task_b)  # frame 2 still queued: two nodes' worth of work
    memory = _round(farm, t0, bounds, Memory())
    assert memory.unused_since == {second.id: t0}
    third = b.take_task()
    memory = _round(farm, t0 + 20, bounds, memory)  # b is busy again: no idle clock
    assert memory.unused_since == {}
    b.finish(third)
    memory = _round(farm, t0 + 30, bounds, memory)  # idle again: its clock starts again
    assert memory.unused_since == {second.id: t0 + 30} and not asked()
    memory = _round(farm, t0 + 30 + 599, bounds, memory)  # one node too many, not yet
    assert not asked()
    memory = _round(farm, t0 + 30 + 600, bounds, memory)  # b idle 10 min; a renders
    [request] = asked()
    assert request.path.endswith(f"/{b.id}/setstatus")
    assert request.json() == {"status": "offline", "is_lazy": True}
    memory = _round(farm, t0 + 700, bounds, memory)  # b is not offline yet
    assert not removals()
    b.sign_off()
    memory = _round(farm, t0 + 760, bounds, memory)
    [removal] = removals()
    assert removal.json()["nodeList"] == [second.id]  # exactly that node, never a's
    batch.settle()
    assert list(batch.account.pools[POOL].nodes) == [first.id]

    a.finish(task_a)  # the queue is empty now
    memory = _round(farm, t0 + 800, bounds, memory)
    memory = _round(farm, t0 + 800 + 599, bounds, memory)
    assert len(asked()) == 1  # a has not been idle for 10 minutes yet
    memory = _round(farm, t0 + 800 + 600, bounds, memory)
    assert asked()[-1].path.endswith(f"/{a.id}/setstatus")
    a.sign_off()
    memory = _round(farm, t0 + 1500, bounds, memory)
    batch.settle()
    pool = batch.account.pools[POOL]
    assert (pool.target_spot, list(pool.nodes)) == (0, [])
    assert load_memory(farm.roots / "memory.json") == memory == Memory()


def test_scale_every_s_rounds_survive_failures_until_sigterm(farm: Farm) -> None:
    env = {**os.environ, "AZURE_BATCH_ACCESS_KEY": base64.b64encode(os.urandom(64)).decode()}
    command = [sys.executable, "-m", "node_agent", "fleet", "scale", "--pool", POOL]
    scaler = subprocess.Popen(
        [*command, "--min", "0", "--max", "2", "--every", "0.05", "--apply"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert scaler.stderr is not None
    lines = read_lines(scaler.stderr, 2)  # a wrong key: every round fails
    scaler.send_signal(signal.SIGTERM)
    assert scaler.wait(30) == 0
    for line in lines:
        assert "HTTP 403 AuthenticationFailed" in line and "trying again in 0.05 s" in line


def test_scale_decides_nothing_blind(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    """A Manager that cannot say what runs where changes nothing: the round fails."""
    farm.node(agent={})
    farm.manager.fail("jobs", 500)
    code, _, err = fleet(capsys, "scale", "--min", "0", "--max", "3", "--idle-minutes", "0")
    assert code == 1 and "no decision this round" in err and "HTTP 500" in err
    code, _, _ = fleet(capsys, "scale", "--min", "0", "--max", "3", "--apply")
    assert code == 1 and not farm.batch.received("POST", "/pools")
    assert not farm.manager.server.received("POST", "/api/v3/worker-mgt")


def test_no_secret_in_any_output(
    farm: Farm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = farm.node(start_task=StartTaskInfo("completed", 1), agent={})
    farm.manager.add_worker(farm.name(node), SECRET, "offline")
    farm.manager.add_task("frame", "misc")
    outputs = []
    for args in (
        ("status",),
        ("status", "--json"),
        ("prune", "--apply"),
        ("heal", "--apply"),
        ("scale", "--min", "0", "--max", "3", "--apply"),
    ):
        for verbose in ([], ["-v"]):
            code = main([*verbose, "fleet", *args, "--pool", POOL])
            captured = capsys.readouterr()
            assert code == (6 if args[0] == "status" else 0), captured.err
            outputs.append(captured.out + captured.err)
    wrong = base64.b64encode(os.urandom(64)).decode()
    monkeypatch.setenv("AZURE_BATCH_ACCESS_KEY", wrong)
    assert main(["-v", "fleet", "status", "--pool", POOL]) == 1
    captured = capsys.readouterr()
    assert "HTTP 403 AuthenticationFailed" in captured.err
    outputs.append(captured.out + captured.err)
    for text in outputs:
        assert farm.batch.key not in text and wrong not in text and SECRET not in text


class _Token:
    """What azure-identity's credentials give: a Microsoft Entra token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("entra-token", int(time.time()) + 3600)


def test_microsoft_entra_id_over_tls(
    certificate: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.identity import DefaultAzureCredential

    assert isinstance(fleet_batch.entra_credential(), DefaultAzureCredential)
    batch = FakeBatch(token="entra-token", tls=tls_context(certificate)).start()
    try:
        batch.add_pool(POOL)
        monkeypatch.setenv("AZURE_BATCH_ENDPOINT", batch.url)
        monkeypatch.delenv("AZURE_BATCH_ACCESS_KEY", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))  # trust the stand-in
        monkeypatch.setattr(fleet_batch, "entra_credential", _Token)
        code, out, _ = fleet(capsys, "status")
        assert code == 0 and "pool render: 0 nodes" in out
        assert batch.received("GET", "/pools/render")[0].headers["Authorization"] == (
            "Bearer entra-token"
        )
    finally:
        batch.stop()


def test_prune_heal_and_scale_print_json(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    """One JSON document each, with its schema, command, time (ISO 8601 UTC) and pool."""
    failed = farm.node(start_task=StartTaskInfo("completed", 1), agent={})
    farm.manager.add_worker("render-0123456789ab", "s", "offline")  # its node is gone
    farm.manager.add_task("frame 1", "misc")
    documents = {}
    for command in ("prune", "heal", "scale"):
        extra = ("--min", "0", "--max", "3") if command == "scale" else ()
        code, out, err = fleet(capsys, command, *extra, "--json")
        assert code == 0, err
        [line] = out.splitlines()
        documents[command] = document = json.loads(line)
        assert document["schema"] == 1 and document["command"] == command
        assert document["pool"] == POOL and document["at"].endswith("Z")
        assert document["applied"] is False
    [stale] = documents["prune"]["stale"]
    assert (
        stale["name"] == "render-0123456789ab" and stale["removable"] and stale["removed"] is None
    )
    [repair] = documents["heal"]["repairs"]
    assert repair["node"] == failed.id and repair["action"] == "reboot" and repair["error"] is None
    scale = documents["scale"]
    # One task, and the pool grows past its failed node.
    assert scale["demand"] == 1 and scale["desired"] == 2 and scale["steps"][0]["act"] == "resize"
    code, out, _ = fleet(capsys, "prune", "--apply", "--json")
    assert json.loads(out)["stale"][0]["removed"] is True
