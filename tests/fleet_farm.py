"""A farm for fleet's tests: a stand-in Batch account with one pool, whose nodes have
real node roots (their state files written by the agent's own writer), and a
stand-in Manager whose workers talk to it over its worker API as real workers do."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import pytest
import requests

from node_agent.cli import main
from node_agent.node.layout import default_worker_name
from node_agent.runtime.state import AgentState, Phase, write_state
from node_agent.sim.standins.batch import FakeBatch
from node_agent.sim.standins.batch_pool import ComputeNode, StartTaskInfo
from node_agent.sim.standins.manager import FakeManager

POOL = "render"
SECRET = "worker-secret-do-not-print"


class Worker:
    """A worker on the Manager, speaking its worker API (HTTP Basic auth)."""

    def __init__(self, manager: FakeManager, name: str) -> None:
        self.base = manager.url.rstrip("/") + "/api/v3/worker"
        body = {"name": name, "platform": "linux", "secret": SECRET}
        body["supported_task_types"] = ["misc"]  # type: ignore[assignment]
        self.id = requests.post(f"{self.base}/register-worker", json=body, timeout=5).json()["uuid"]
        self.name = name

    def __call__(self, method: str, path: str, body: Any = None) -> requests.Response:
        auth = (self.id, SECRET)
        return requests.request(method, f"{self.base}/{path}", json=body, auth=auth, timeout=5)

    def wake(self) -> Worker:
        """Sign on (as a v3 worker does) and be awake."""
        body = {"name": self.name, "supported_task_types": ["misc"], "software_version": "3.9"}
        assert self("POST", "sign-on", {**body, "can_restart": False}).ok
        assert self("POST", "state-changed", {"status": "awake"}).ok
        return self

    def take_task(self) -> str:
        """Ask for a task (there must be one); its id."""
        answer = self("POST", "task")
        assert answer.status_code == 200, answer.text
        task_id: str = answer.json()["uuid"]
        return task_id

    def finish(self, task_id: str) -> None:
        assert self("POST", f"task/{task_id}", {"taskStatus": "completed"}).ok

    def sign_off(self) -> None:
        assert self("POST", "sign-off").status_code == 204


@dataclass
class Farm:
    """The pool ``render`` and its Manager."""

    batch: FakeBatch
    manager: FakeManager
    roots: Path
    nodes: list[ComputeNode] = field(default_factory=list)

    def node(
        self,
        *,
        dedicated: bool = False,
        state: str = "idle",
        start_task: Optional[StartTaskInfo] = None,
        agent: Optional[dict[str, Any]] = None,
    ) -> ComputeNode:
        """A node; with ``agent``, a state file (these fields over a running agent's)."""
        root = self.roots / f"node-{len(self.nodes)}"
        node = self.batch.add_node(
            POOL, dedicated=dedicated, state=state, root=root, start_task=start_task
        )
        if agent is not None:
            name = self.name(node)
            started = time.time()
            document = AgentState(1, started, Phase.RUNNING, started, "v3", name, "/w", "/d", "/c")
            path = root / "shared" / ".node-agent" / "state.json"
            path.parent.mkdir(parents=True)
            write_state(str(path), replace(document, **agent))
        self.nodes.append(node)
        return node

    def name(self, node: ComputeNode) -> str:
        """The node's worker name, as node-agent gives it."""
        return default_worker_name(POOL, node.id, "")

    def worker(self, node: ComputeNode) -> Worker:
        """The node's worker, registered and awake."""
        return Worker(self.manager, self.name(node)).wake()

    def live_names(self) -> list[str]:
        return [w.name for w in self.manager.live_workers()]


def fleet(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``node-agent fleet ARGS --pool render``: exit code, stdout, stderr."""
    code = main(["fleet", *args, "--pool", POOL])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
