"""fleet against a simulated pool: nodes running the real start task from the built
package, the stand-in worker, and the stand-in Batch service that reboots them as
Batch does (the start task runs again, with the pool's packages as they are then).
heal brings a failed node's worker back; roll moves every node onto a new worker
package version, a few at a time, without a render lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.node.envfile import load_env_file
from node_agent.sim.node import tool_packages
from node_agent.sim.pool import SimulatedPool
from node_agent.sim.standins.imds import FakeImds
from node_agent.sim.standins.manager import FakeManager
from tests.helpers import AZ_ENV, wait_until
from tests.packages import REPO

POOL_JSON = REPO / "packaging" / "pool.json"
WORKER = "flamenco-worker"


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The blender and ffmpeg packages, built once for this module."""
    return tool_packages(tmp_path_factory.mktemp("tools"))


def _pool(
    tmp_path: Path,
    package: Path,
    tools: dict[str, Path],
    services: tuple[FakeManager, FakeImds],
    count: int,
) -> SimulatedPool:
    manager, imds = services
    return SimulatedPool(
        tmp_path,
        load_env_file(str(AZ_ENV / "newer_spot.env")),
        {WORKER: package, **tools},
        POOL_JSON,
        {"FLAMENCO_MANAGER_URL": manager.url, "NODE_AGENT_IMDS_URL": imds.url},
        count=count,
    )


@pytest.fixture
def fleet_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment ``node-agent fleet`` runs with (filled by the test)."""
    yield {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def _fleet(
    env: dict[str, str], pool: SimulatedPool, *args: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "node_agent", "fleet", *args, "--pool", pool.pool_id]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _awake(manager: FakeManager, count: int) -> bool:
    return sum(w.status == "awake" for w in manager.live_workers()) == count


def test_heal_reboots_a_node_whose_agent_died_and_its_worker_comes_back(  # noqa: PLR0917
    package: Path,
    tools: dict[str, Path],
    tmp_path: Path,
    services: tuple[FakeManager, FakeImds],
    fleet_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    manager, _ = services
    pool = _pool(tmp_path, package, tools, services, 2)
    pool.lay_out()
    pool.start()
    try:
        wait_until(lambda: _awake(manager, 2), 90, "two workers")
        fleet_env.update(pool.fleet_environ(), FLAMENCO_MANAGER_URL=manager.url)
        spot = pool.nodes[1]
        node_id = spot.overrides["AZ_BATCH_NODE_ID"]
        compute = pool.batch.account.pools[pool.pool_id].nodes[node_id]
        assert spot.process is not None
        spot.process.send_signal(signal.SIGKILL)  # node-agent killed: the start task ends
        wait_until(lambda: compute.start_task and compute.start_task.state == "completed", 30)
        status = _fleet(fleet_env, pool, "status", "--json")
        assert status.returncode == 6, status.stderr
        row = next(n for n in json.loads(status.stdout)["nodes"] if n["id"] == node_id)
        assert row["agent"]["stale"] and row["health"] == "failed"
        assert row["repair"]["action"] == "reboot"
        healed = _fleet(fleet_env, pool, "heal", "--apply")
        assert healed.returncode == 0 and "1 repaired" in healed.stdout, healed.stderr
        # The simulator reboots the node: its start task runs again, its worker is back.
        wait_until(lambda: compute.start_task and compute.start_task.state == "running", 60)
        wait_until(lambda: _fleet(fleet_env, pool, "status").returncode == 0, 120, "a healthy pool")
        after = json.loads(_fleet(fleet_env, pool, "status", "--json").stdout)
        assert [n["health"] for n in after["nodes"]] == ["idle", "idle"]
        # A node a resize adds joins as Batch's would: laid out, its start task run.
        with pool.batch.lock:
            pool.batch.account.resize(pool.pool_id, None, 2)
        pool.batch.settle()
        wait_until(lambda: _awake(manager, 3), 90, "the new node's worker")
    finally:
        codes = pool.stop()
    assert codes == [0, 0, 0]
    assert "Traceback" not in capfd.readouterr().err  # the stand-ins too, as nodes died


def test_roll_moves_four_nodes_onto_a_new_worker_version_without_losing_a_render(
    package: Path,
    tools: dict[str, Path],
    tmp_path: Path,
    services: tuple[FakeManager, FakeImds],
    fleet_env: dict[str, str],
) -> None:
    manager, _ = services
    pool = _pool(tmp_path, package, tools, services, 4)
    pool.lay_out()
    pool.start()
    try:
        wait_until(lambda: _awake(manager, 4), 120, "four workers")
        fleet_env.update(pool.fleet_environ(), FLAMENCO_MANAGER_URL=manager.url)
        tasks = [
            manager.add_task(
                f"frame {i}", "misc", [{"name": "sleep", "parameters": {"duration_in_seconds": 2}}]
            )
            for i in range(10)
        ]
        wait_until(lambda: sum(manager.task_status(t) == "active" for t in tasks) >= 3, 60)
        # The operator uploads a new worker package and makes it the default version.
        old = pool.nodes[0].deployed
        assert old is not None and old[WORKER] == ("3.5.2", True)
        pool.batch.account.applications[WORKER].versions["3.6.0"] = package
        pool.batch.set_default_version(WORKER, "3.6.0")
        plan = _fleet(fleet_env, pool, "roll")
        assert plan.returncode == 0, plan.stderr
        assert "4 node(s) still to roll, at most 1 at a time" in plan.stdout
        assert not pool.batch.received("POST", "/pools")  # a plan changes nothing
        args = ("roll", "--apply", "--at-once", "2", "--every", "0.5", "--json")
        # Interrupted once it has begun: it stops at once, and carries on when run again.
        roll_file = tmp_path / "state" / "node-agent" / f"fleet-roll-{pool.pool_id}.json"
        first = subprocess.Popen(
            [sys.executable, "-m", "node_agent", "fleet", *args, "--pool", pool.pool_id],
            env=fleet_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(
                lambda: roll_file.exists() and '"draining": {}' not in roll_file.read_text(), 120
            )
            first.send_signal(signal.SIGTERM)
            out, err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 0 and "fleet roll --apply carries on" in err, err
        assert roll_file.exists()
        roll = _fleet(fleet_env, pool, *args)
        assert roll.returncode == 0, roll.stderr
        rounds = [json.loads(line) for line in (out + roll.stdout).splitlines()]
        assert rounds[-1]["finished"] and not rounds[-1]["stuck"]
        assert max(len(r["in_flight"]) for r in rounds) == 2  # never more than --at-once
        assert all(
            node.deployed and node.deployed[WORKER] == ("3.6.0", True) for node in pool.nodes
        )
        reboots = pool.batch.received("POST", f"/pools/{pool.pool_id}/nodes/")
        assert all(r.path.split("?")[0].endswith("/reboot") for r in reboots)
        assert len({r.path for r in reboots}) == len(reboots) == 4  # each node once
        wait_until(lambda: all(manager.task_status(t) == "completed" for t in tasks), 120)
        assert manager.farm.requeued == 0  # no render was taken from its worker
        wait_until(lambda: _awake(manager, 4), 60, "every worker back")
        assert not roll_file.exists()
    finally:
        codes = pool.stop()
    assert codes == [0, 0, 0, 0]
