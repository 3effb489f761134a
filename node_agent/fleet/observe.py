"""One look at the pool and its Manager (a ``Snapshot``): the pool and its nodes from
Batch, the nodes' own files through Batch's file API (several at once: a pool has
hundreds), the Manager's workers and queue. A thin edge.

The files are read by daemon threads: a signal that ends fleet while Batch is slow
to answer ends it at once, with no reader left to wait for.
"""

from __future__ import annotations

import posixpath
import queue
import threading
import time
from collections.abc import Sequence
from typing import Callable, Optional, TypeVar

from node_agent.fleet.agentfile import NotAStateFile, parse_agent, parse_worker_ids
from node_agent.fleet.batch import BatchFailure, BatchService
from node_agent.fleet.flamenco import read_queue, read_workers
from node_agent.fleet.model import (
    TAGS_SETTING,
    WORKER_IDS,
    AgentRead,
    NodeView,
    Snapshot,
    expected_names,
    node_workers,
    shared_names,
)
from node_agent.manager.api import ManagerApi

READERS = 8  # files read at once
T = TypeVar("T")
R = TypeVar("R")


def in_parallel(work: Callable[[T], R], items: Sequence[T], threads: int = READERS) -> list[R]:
    """``work`` on every item, ``threads`` at a time, in daemon threads; the results
    in the items' order (what ``work`` raised is raised here)."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(items)):
        todo.put(index)
    results: dict[int, R] = {}
    failures: list[BaseException] = []
    done = threading.Semaphore(0)

    def run() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = work(items[index])
            except BaseException as exc:  # noqa: BLE001 (handed to the caller below)
                failures.append(exc)
            finally:
                done.release()

    for _ in range(min(threads, len(items))):
        threading.Thread(target=run, daemon=True).start()
    for _ in items:
        done.acquire()
    if failures:
        raise failures[0]
    return [results[i] for i in range(len(items))]


def read_agent(batch: BatchService, node: NodeView, path: str) -> AgentRead:
    """A node's state file, or why it could not be read."""
    try:
        raw = batch.read(node.id, path)
    except BatchFailure as exc:
        return AgentRead(error=str(exc))
    try:
        return AgentRead(state=parse_agent(raw))
    except NotAStateFile as exc:
        return AgentRead(error=f"{path} is not a node-agent state file: it {exc}")


def read_ids(batch: BatchService, node: NodeView, path: str, read: AgentRead) -> AgentRead:
    """``read`` with the worker ids the node's ``worker-ids`` file lists (None when it
    cannot be read: a node-agent older than that file, or a node that is down)."""
    try:
        ids: Optional[frozenset[str]] = parse_worker_ids(batch.read(node.id, path))
    except BatchFailure:
        ids = None
    return AgentRead(read.state, read.error, ids)


def snapshot(
    batch: BatchService,
    api: Optional[ManagerApi],
    state_path: str,
    read_file: Callable[[NodeView], bool] = lambda node: True,
    *,
    queue_too: bool = True,
    detail: bool = False,
) -> Snapshot:
    """The pool, its nodes, the files of the nodes ``read_file`` picks, and (with
    ``api``) the Manager's workers and, with ``queue_too``, its queue (``detail``:
    with blocklists and tags, as ``scale`` decides on them). Raises
    ``BatchFailure`` when Batch cannot be asked; a Manager that cannot be asked
    leaves its part None, with the reason."""
    now = time.time()
    pool = batch.pool()
    nodes = tuple(batch.nodes())
    chosen = [n for n in nodes if read_file(n)]
    reads = in_parallel(lambda node: read_agent(batch, node, state_path), chosen)
    agents = {node.id: read for node, read in zip(chosen, reads)}
    # A worker name several nodes share tells their entries apart only by the ids
    # each node recorded: read those lists (only then: a file read per node).
    shared = shared_names(pool.id, nodes, agents)
    ids_path = posixpath.join(posixpath.dirname(state_path), WORKER_IDS)
    sharing = [n for n in chosen if shared.keys() & set(expected_names(pool.id, n, agents[n.id]))]
    with_ids = in_parallel(lambda n: read_ids(batch, n, ids_path, agents[n.id]), sharing)
    agents.update({node.id: read for node, read in zip(sharing, with_ids)})
    if api is None:
        return Snapshot(pool, nodes, agents, None, None, "no Manager URL given", now, False)
    workers = read_workers(api)
    found = None
    if queue_too and workers is not None:
        match = node_workers(pool.id, nodes, agents, workers)
        pool_workers = [w.id for w in match.workers.values() if w is not None]
        tag_names = [t.strip() for t in pool.start_settings.get(TAGS_SETTING, "").split(",")]
        found = read_queue(api, pool_workers, [t for t in tag_names if t], detail=detail)
    problem = None
    if workers is None or (queue_too and found is None):
        problem = f"the Manager at {api.url} did not answer (see the warnings above)"
    return Snapshot(pool, nodes, agents, workers, found, problem, now)
