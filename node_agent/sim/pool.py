"""A simulated pool: a few simulated Batch nodes of one pool (``simulate.SimulatedNode``,
the first dedicated, the others Spot), sharing the pool's stand-in file server, and
the stand-in Batch service (``standins.batch``) that lists them and serves their
files, so ``node-agent fleet`` can be tried without Azure. When a node's start task
ends, the Batch service reports it as Batch does (``startTaskInfo``).

Used by ``packaging/simulate-node --nodes N`` and the tests; never shipped in the
package, never used on a real node.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from node_agent.common import fsutil
from node_agent.sim.node import SimulatedNode
from node_agent.sim.standins.batch import FakeBatch
from node_agent.sim.standins.batch_pool import new_node_id


@dataclass
class SimulatedPool:
    """``count`` nodes under ``base``/node-<i>, and the Batch service that knows them."""

    base: Path
    fixture: Mapping[str, str]  # a Batch environment (tests/fixtures/az_env/*.env)
    packages: Mapping[str, Path]  # package id -> zip
    pool_json: Path
    overrides: Mapping[str, str]  # for every node: the Manager's URL, ...
    count: int
    batch: FakeBatch = field(default_factory=FakeBatch)
    nodes: list[SimulatedNode] = field(default_factory=list)

    @property
    def pool_id(self) -> str:
        """The pool's id, the fixture's."""
        return self.fixture.get("AZ_BATCH_POOL_ID") or "pool"

    def lay_out(self) -> None:
        """Lay out every node (its own id and node root, one file server for all) and
        make the Batch service know them."""
        self.batch.add_pool(self.pool_id)
        for index in range(self.count):
            dedicated = index == 0
            node_id = new_node_id(dedicated)
            identity = {
                "AZ_BATCH_NODE_ID": node_id,
                "AZ_BATCH_NODE_IS_DEDICATED": "true" if dedicated else "false",
            }
            node = SimulatedNode(
                self.base / f"node-{index}" / "batch" / "tasks",
                self.fixture,
                self.packages,
                self.pool_json,
                {**self.overrides, **identity},
                storage=self.base / "file-server",
            )
            node.lay_out()
            root = Path(node.environ["AZ_BATCH_NODE_ROOT_DIR"])
            self.batch.add_node(self.pool_id, dedicated=dedicated, root=root, node_id=node_id)
            self.nodes.append(node)

    def start(self) -> None:
        """Serve the Batch service and start every node's start task."""
        self.batch.start()
        for node in self.nodes:
            process = node.start()
            node_id = node.environ["AZ_BATCH_NODE_ID"]
            threading.Thread(target=self._ended, args=(node_id, process), daemon=True).start()

    def _ended(self, node_id: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        with self.batch.lock:
            info = self.batch.account.pools[self.pool_id].nodes[node_id].start_task
            if info is not None:
                info.state, info.exit_code, info.ended = "completed", code, time.time()

    def stop(self) -> list[Optional[int]]:
        """Stop every node (SIGTERM to its start task); their exit codes."""
        codes = [node.stop() for node in self.nodes]
        self.batch.stop()
        return codes

    def fleet_environ(self) -> dict[str, str]:
        """The variables ``node-agent fleet`` reads the account from (a secret key)."""
        return {
            "AZURE_BATCH_ENDPOINT": self.batch.url,
            "AZURE_BATCH_ACCOUNT": self.batch.name,
            "AZURE_BATCH_ACCESS_KEY": self.batch.key,
        }

    def write_env_file(self, path: Path, extra: Mapping[str, str]) -> None:
        """Those variables and ``extra`` as a KEY=VALUE file only its owner can read:
        the key is never printed."""
        lines = {**self.fleet_environ(), **extra}
        data = "".join(f"{k}={v}\n" for k, v in lines.items()).encode()
        fsutil.atomic_write(os.fspath(path), data, 0o600)
