"""One look at the pool and its Manager (a ``Snapshot``): the pool and its nodes from
Batch, the nodes' state files through Batch's file API (several at once: a pool has
hundreds), the Manager's workers and queue. A thin edge."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from node_agent.fleet.batch import BatchFailure, BatchService
from node_agent.fleet.flamenco import read_queue, read_workers
from node_agent.fleet.model import AgentRead, NodeView, Snapshot
from node_agent.manager.api import ManagerApi
from node_agent.runtime.state import StateProblem, parse_state

READERS = 8  # state files read at once


def read_agent(batch: BatchService, node: NodeView, path: str) -> AgentRead:
    """A node's state file, or why it could not be read."""
    try:
        raw = batch.read(node.id, path)
    except BatchFailure as exc:
        return AgentRead(error=str(exc))
    try:
        return AgentRead(state=parse_state(raw))
    except StateProblem as exc:
        return AgentRead(error=f"{path} is not a node-agent state file: it {exc}")


def snapshot(
    batch: BatchService,
    api: Optional[ManagerApi],
    state_path: str,
    read_file: Callable[[NodeView], bool] = lambda node: True,
    *,
    queue: bool = True,
) -> Snapshot:
    """The pool, its nodes, the state files of the nodes ``read_file`` picks, and
    (with ``api``) the Manager's workers and, with ``queue``, its queue. Raises
    ``BatchFailure`` when Batch cannot be asked; a Manager that cannot be asked
    leaves its part None, with the reason."""
    pool = batch.pool()
    nodes = tuple(batch.nodes())
    chosen = [n for n in nodes if read_file(n)]
    with ThreadPoolExecutor(max_workers=READERS) as readers:
        reads = list(readers.map(lambda node: read_agent(batch, node, state_path), chosen))
    agents = {node.id: read for node, read in zip(chosen, reads)}
    if api is None:
        return Snapshot(pool, nodes, agents, None, None, "no Manager URL given")
    workers = read_workers(api)
    found = read_queue(api) if queue and workers is not None else None
    problem = None
    if workers is None or (queue and found is None):
        problem = f"the Manager at {api.url} did not answer (see the warnings above)"
    return Snapshot(pool, nodes, agents, workers, found, problem)
