"""A simulated pool: a few simulated Batch nodes of one pool (``simulate.SimulatedNode``,
the first dedicated, the others Spot), sharing the pool's stand-in file server, and
the stand-in Batch service (``standins.batch``) that lists them and serves their
files, so ``node-agent fleet`` can be tried without Azure.

Batch's side of a node's life is played here: its application packages come from
the pool's package references (the applications and their versions are registered
with the stand-in service, the fixture's versions the defaults), its start task
runs when it joins, and when it is rebooted or reimaged its processes are stopped
as a shutdown stops them, a reimage wipes its disk, the packages are deployed again
as the pool references them then, and the start task runs again; when the start
task ends, the service reports it as Batch does (``startTaskInfo``); a removed node
is powered off; a node a resize adds is laid out and started like the first ones.

Used by ``packaging/simulate-node --nodes N`` and the tests; never shipped in the
package, never used on a real node.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from node_agent.common import fsutil
from node_agent.node.env import BatchEnv
from node_agent.sim.node import SimulatedNode
from node_agent.sim.standins.batch import FakeBatch
from node_agent.sim.standins.batch_pool import ComputeNode, application_name, new_node_id

UNKNOWN_VERSION = "1.0"  # a fixture package whose version its folder name does not say


@dataclass
class SimulatedPool:
    """``count`` nodes under ``base``/node-<i>, and the Batch service that knows them."""

    base: Path
    fixture: Mapping[str, str]  # a Batch environment (tests/fixtures/az_env/*.env)
    packages: Mapping[str, Path]  # package id -> zip (the version the fixture names)
    pool_json: Path
    overrides: Mapping[str, str]  # for every node: the Manager's URL, ...
    count: int
    batch: FakeBatch = field(default_factory=FakeBatch)
    nodes: list[SimulatedNode] = field(default_factory=list)
    _events: queue.Queue[Optional[tuple[str, str]]] = field(default_factory=queue.Queue)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: Optional[threading.Thread] = None
    _stopping: bool = False  # set under _lock: no node is started any more

    @property
    def pool_id(self) -> str:
        """The pool's id, the fixture's."""
        return self.fixture.get("AZ_BATCH_POOL_ID") or "pool"

    def lay_out(self) -> None:
        """Register the packages as applications, create the pool with the template's
        package references and start task, lay out every node (its own id and node
        root, one file server for all) and make the Batch service know them."""
        template = json.loads(self.pool_json.read_text(encoding="utf-8"))
        fixture = BatchEnv.from_environ(self.fixture)
        for package_id, archive in self.packages.items():
            found = fixture.find_package(package_id)
            version = (found.version if found is not None else None) or UNKNOWN_VERSION
            self.batch.add_application(package_id, {version: archive}, default=version)
        references = [
            r
            for r in template.get("applicationPackageReferences", [])
            if application_name(r["applicationId"]) in self.packages
        ]
        self.batch.add_pool(self.pool_id, references=references, start_task=template["startTask"])
        for index in range(self.count):
            compute = self.batch.add_node(
                self.pool_id, dedicated=index == 0, node_id=new_node_id(index == 0)
            )
            self._make(compute)

    def _make(self, compute: ComputeNode) -> SimulatedNode:
        """A simulated node for a node of the service: laid out, its files served."""
        identity = {
            "AZ_BATCH_NODE_ID": compute.id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if compute.dedicated else "false",
        }
        node = SimulatedNode(
            self.base / f"node-{len(self.nodes)}" / "batch" / "tasks",
            self.fixture,
            {},
            self.pool_json,
            {**self.overrides, **identity},
            storage=self.base / "file-server",
        )
        with self.batch.lock:
            compute.root = Path(node.environ["AZ_BATCH_NODE_ROOT_DIR"])
            self._deploy(node, compute)
        node.lay_out()
        self.nodes.append(node)
        return node

    def _deploy(self, node: SimulatedNode, compute: ComputeNode) -> None:
        """Give the node the packages Batch deployed to it."""
        applications = self.batch.account.applications
        node.deployed = {i: (p.version, p.by_default) for i, p in compute.packages.items()}
        node.packages = {
            i: path
            for i, p in compute.packages.items()
            if (path := applications[i].versions[p.version]) is not None
        }

    def node(self, node_id: str) -> Optional[SimulatedNode]:
        """The simulated node of this id (None: one a resize added, not simulated)."""
        return next((n for n in self.nodes if _id(n) == node_id), None)

    def start(self) -> None:
        """Serve the Batch service and start every node's start task."""
        self.batch.account.on_node = self._on_node
        self.batch.start()
        self._thread = threading.Thread(target=self._handle_events, daemon=True)
        self._thread.start()
        for node in self.nodes:
            self._boot(node)

    def _boot(self, node: SimulatedNode) -> None:
        process = node.start()
        threading.Thread(target=self._ended, args=(node, process), daemon=True).start()

    def _ended(self, node: SimulatedNode, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        with self._lock, self.batch.lock:
            compute = self.batch.account.pools[self.pool_id].nodes.get(_id(node))
            if node.process is not process or compute is None or compute.pending:
                return  # restarted or removed: Batch reports the new run, or nothing
            info = compute.start_task
            if info is not None:
                info.state, info.exit_code, info.ended = "completed", code, time.time()

    def _on_node(self, event: str, compute: ComputeNode) -> None:
        """From the Batch service, under its lock: never blocks."""
        self._events.put((event, compute.id))

    def _handle_events(self) -> None:
        """Restart or power off nodes as the Batch service asks, one at a time (the
        processes are started by this thread, which lives as long as the pool)."""
        while (event := self._events.get()) is not None:
            kind, node_id = event
            with self._lock:  # the old run's end is not reported, nor mixed with the new
                if self._stopping:
                    continue
                if kind == "added":
                    with self.batch.lock:
                        compute = self.batch.account.pools[self.pool_id].nodes.get(node_id)
                    if compute is not None:
                        self._boot(self._make(compute))
                    continue
                node = self.node(node_id)
                if node is None:
                    continue
                node.power_off()
                if kind == "removed":
                    continue
                with self.batch.lock:
                    compute = self.batch.account.pools[self.pool_id].nodes[node_id]
                    if compute.pending == "reimage":
                        _wipe(Path(node.environ["AZ_BATCH_NODE_ROOT_DIR"]))
                    self.batch.account.restarted(compute)
                    self._deploy(node, compute)
                node.lay_out()
                self._boot(node)

    def stop(self) -> list[Optional[int]]:
        """Stop every node (SIGTERM to its start task); their exit codes. The thread
        that started restarted nodes ends only after: its end sends them SIGTERM too
        (``SimulatedNode.start``), and one signal is what a node gets."""
        with self._lock:
            self._stopping = True
            codes = [node.stop() for node in self.nodes]
        self._events.put(None)
        if self._thread is not None:
            self._thread.join()
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


def _id(node: SimulatedNode) -> str:
    return node.overrides["AZ_BATCH_NODE_ID"]


def _wipe(root: Path) -> None:
    """A new OS disk: nothing of the node root is left."""
    for entry in root.iterdir() if root.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
