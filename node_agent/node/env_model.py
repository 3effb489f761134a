"""The typed pieces of a Batch node's environment: the account, the node and its
dirs, the task, reserved disk space, variables kept as they came. Pure data; the
parser in ``env`` builds them. ``None`` means Batch did not say (or said something
node-agent could not read, which the parser reports as a warning)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from node_agent.common.redact import is_secret

# What Batch allows in a pool id (and uses for node ids): the REST API's pattern.
BATCH_ID = re.compile(r"[A-Za-z0-9_-]+")
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


def safe_id(text: str) -> str:
    """``text`` with every character Batch does not allow in an id replaced by ``_``:
    no newline, control or look-alike character reaches a name or a report."""
    return _NOT_ID.sub("_", text)


class UserIdentity(Enum):
    """The four identities Batch runs a task as (``AZ_BATCH_TASK_USER_IDENTITY``)."""

    TASK_NON_ADMIN = "TaskNonAdmin"
    TASK_ADMIN = "TaskAdmin"
    POOL_NON_ADMIN = "PoolNonAdmin"
    POOL_ADMIN = "PoolAdmin"

    @property
    def is_admin(self) -> bool:
        """Whether the task may use sudo (node-agent never needs it)."""
        return self in (UserIdentity.TASK_ADMIN, UserIdentity.POOL_ADMIN)


class TaskKind(Enum):
    """Which kind of Batch task the environment belongs to."""

    START = "start"
    JOB = "job"
    MULTI_INSTANCE = "multi-instance"


@dataclass(frozen=True)
class Account:
    """The Batch account the node belongs to."""

    name: Optional[str]
    url: Optional[str]


@dataclass(frozen=True)
class Node:
    """The compute node and its directories."""

    id: Optional[str]
    is_dedicated: Optional[bool]
    root_dir: str
    shared_dir: str
    startup_dir: Optional[str]
    startup_working_dir: Optional[str]
    mounts_dir: Optional[str]

    @property
    def is_spot(self) -> bool:
        """Spot / low-priority nodes can be preempted at any time. A node that does
        not say is treated as one: watching for preemption costs nothing."""
        return self.is_dedicated is not True

    @property
    def applications_dir(self) -> str:
        """Where Batch extracts application packages."""
        return posixpath.join(self.root_dir, "applications")


@dataclass(frozen=True)
class HostPort:
    """An address and a port, as in ``AZ_BATCH_MASTER_NODE``."""

    address: str
    port: int


@dataclass(frozen=True)
class MultiInstance:
    """The extra context of a multi-instance task."""

    hosts: tuple[str, ...]
    master: HostPort
    is_master: Optional[bool]
    task_shared_dir: Optional[str]


@dataclass(frozen=True)
class Task:
    """The task this environment was made for: start, job or multi-instance."""

    kind: TaskKind
    dir: Optional[str]
    working_dir: Optional[str]
    user: Optional[str]  # None: undocumented variable absent, the process's own user
    user_identity: Optional[UserIdentity]  # None: unknown
    job_id: Optional[str]
    task_id: Optional[str]
    multi_instance: Optional[MultiInstance]


@dataclass(frozen=True)
class ReservedDiskSpace:
    """Batch's reserved disk space figures, in bytes, where the node sets them.

    ``task_bytes`` (``AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES``) is the
    documented threshold: with less free space the node is marked DiskFull.
    ``agent_bytes`` (``AZ_BATCH_RESERVED_DISK_SPACE_BYTES``) is what the Batch node
    agent keeps for itself (node agent 1.7.14 changelog).
    """

    task_bytes: Optional[int]
    agent_bytes: Optional[int]


@dataclass(frozen=True)
class Variable:
    """An ``AZ_BATCH_*`` variable node-agent does not model, kept as it came."""

    name: str
    value: str

    @property
    def is_secret(self) -> bool:
        """Whether printers must redact the value."""
        return is_secret(self.name)
