"""Where node-agent keeps things on the node. Pure: paths only, no I/O.

Everything lives in the node's shared dir, the one place a non-admin start task can
write that survives start task re-runs and reboots (a reimage wipes it, and the
node then registers as a new worker):

    <shared>/blender, ffmpeg, ffprobe     symlinks into the current package folders,
                                          or launchers (a package with libraries)
    <shared>/.node-agent/                 the agent's dir: state file, lock, the ids
                                          the worker has held, the worker asked off
                                          new work
    <shared>/.node-agent/libs/            the launchers' folders of library links
    <shared>/.node-agent/worker/          the worker's working dir and config
    <shared>/.node-agent/worker/home/     the worker's data dir: credentials, queue
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Optional

from node_agent.node.env import BatchEnv
from node_agent.node.env_model import safe_id
from node_agent.node.flavour import Flavour

V3_CONFIG = "flamenco-worker.yaml"
V3_CREDENTIALS = "flamenco-worker-credentials.yaml"
V2_CONFIG = "flamenco-worker.cfg"
V2_HOME_CONFIG = ".flamenco-worker.cfg"  # where a v2 worker stores its credentials
WORKER_EXECUTABLE = "flamenco-worker"


@dataclass(frozen=True)
class Layout:
    """The node's paths that node-agent owns."""

    shared_dir: str
    applications_dir: str
    agent_dir: str
    worker_dir: str
    worker_home: str
    libs_dir: str

    @classmethod
    def for_env(cls, env: BatchEnv) -> Layout:
        """The layout of the node ``env`` describes."""
        agent = posixpath.join(env.node.shared_dir, ".node-agent")
        worker = posixpath.join(agent, "worker")
        return cls(
            shared_dir=env.node.shared_dir,
            applications_dir=env.node.applications_dir,
            agent_dir=agent,
            worker_dir=worker,
            worker_home=posixpath.join(worker, "home"),
            libs_dir=posixpath.join(agent, "libs"),
        )

    def credentials(self, flavour: Flavour) -> str:
        """Where the worker keeps its credentials: v3's own file, or the v2 worker's
        config in its home (its id and secret are kept there)."""
        name = V2_HOME_CONFIG if flavour is Flavour.V2 else V3_CREDENTIALS
        return posixpath.join(self.worker_home, name)

    def worker_ids(self) -> str:
        """The list of worker ids this node's worker has held (``worker_ids``)."""
        return posixpath.join(self.agent_dir, "worker-ids")

    def status_asked(self) -> str:
        """The record of the v3 worker the agent asked off new work (``worker_status``)."""
        return posixpath.join(self.agent_dir, "status-asked")

    def link(self, tool: str) -> str:
        """Where the tool's symlink or launcher goes (on every task's ``PATH``)."""
        return posixpath.join(self.shared_dir, tool)

    def in_applications(self, path: str) -> bool:
        """Whether a path lies inside some package folder (this deployment or older)."""
        return path.startswith(self.applications_dir.rstrip("/") + "/")


_TVMPS = re.compile(r"tvmps_([0-9a-f]{12})[0-9a-f]*_[a-z]", re.IGNORECASE)
# What default_worker_name makes of a Batch node id: 12 hex digits of a tvmps_ id, a
# short id kept as it is (Batch's older ids: tvm-...), or 20 characters of a long one
# and 8 hex digits of its hash.
_NODE_PART = re.compile(r"[0-9a-f]{12}|tvm-[A-Za-z0-9_-]{1,28}|[A-Za-z0-9_-]{20}-[0-9a-f]{8}")


def _pool_prefix(pool_id: str) -> str:
    return f"{safe_id(pool_id)[:32]}-"


def default_worker_name(pool_id: Optional[str], node_id: Optional[str], host_name: str) -> str:
    """A worker name readable in the Manager's list and unique within the pool.

    ``<pool>-<node>``, where a ``tvmps_<64 hex>_d`` node id is cut to its first 12
    hex digits (48 random bits: collisions are negligible within a pool) and other
    ids over 32 characters keep 20 and gain 8 hex digits of their hash. Without a
    node id the host name stands in; without a pool id the name is the node part.
    Only letters, digits, ``_`` and ``-`` ever reach it.
    """
    node = safe_id(node_id or host_name)
    match = _TVMPS.fullmatch(node)
    if match:
        short = match.group(1).lower()
    elif len(node) <= 32:
        short = node
    else:
        digest = hashlib.sha256(node.encode()).hexdigest()[:8]
        short = f"{node[:20]}-{digest}"
    return _pool_prefix(pool_id) + short if pool_id else short


def is_default_worker_name(pool_id: str, name: str) -> bool:
    """Whether ``name`` is one ``default_worker_name`` gives a node of pool ``pool_id``
    (``render-gpu-ab12cd34ef56`` is pool ``render-gpu``'s, not pool ``render``'s)."""
    prefix = _pool_prefix(pool_id)
    return name.startswith(prefix) and bool(_NODE_PART.fullmatch(name[len(prefix) :]))
