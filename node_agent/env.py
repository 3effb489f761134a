"""The typed model of a Batch node's environment (the ``AZ_BATCH_*`` variables).

``BatchEnv.from_environ`` is pure: it reads a mapping, never the file system, and
either returns the whole model or raises ``InvalidInput`` listing every problem.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar
from urllib.parse import urlsplit

from node_agent.env_model import (
    Account,
    HostPort,
    MultiInstance,
    Node,
    ReservedDiskSpace,
    Task,
    TaskKind,
    UserIdentity,
    Variable,
)
from node_agent.errors import InvalidInput, Problem
from node_agent.packages import PREFIX as PACKAGE_PREFIX
from node_agent.packages import AppPackage, flatten, group_packages
from node_agent.redact import shown

BATCH_PREFIX = "AZ_BATCH_"
_WINDOWS_PATH = re.compile(r"\A(?:[A-Za-z]:[\\/]|\\\\)|\\")

T = TypeVar("T")


@dataclass(frozen=True)
class BatchEnv:
    """Everything the ``AZ_BATCH_*`` environment says about the node and the task."""

    account: Account
    pool_id: str
    node: Node
    task: Task
    certificates_dir: Optional[str]
    reserved_disk_space: ReservedDiskSpace
    packages: tuple[AppPackage, ...]
    extra: tuple[Variable, ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BatchEnv:
        """Build the model from an environment, or raise ``InvalidInput`` with every
        problem found."""
        return _Parser(environ).parse()

    def find_package(self, package_id: str) -> Optional[AppPackage]:
        """The package with this id (case-insensitive, ``-`` and ``_`` alike).

        When the pool references several versions, the default version wins; without
        one, the first by folder name. None when the node has no such package.
        """
        matches = [p for p in self.packages if p.matches(package_id)]
        defaults = [p for p in matches if p.is_default]
        preferred = defaults or matches
        return preferred[0] if preferred else None


# Variables the parser models; every other AZ_BATCH_* variable lands in ``extra``.
_REQUIRED = (
    "AZ_BATCH_ACCOUNT_NAME",
    "AZ_BATCH_ACCOUNT_URL",
    "AZ_BATCH_POOL_ID",
    "AZ_BATCH_NODE_ID",
    "AZ_BATCH_NODE_IS_DEDICATED",
    "AZ_BATCH_NODE_ROOT_DIR",
    "AZ_BATCH_NODE_SHARED_DIR",
    "AZ_BATCH_NODE_STARTUP_DIR",
    "AZ_BATCH_TASK_DIR",
    "AZ_BATCH_TASK_WORKING_DIR",
    "AZ_BATCH_TASK_USER",
    "AZ_BATCH_TASK_USER_IDENTITY",
)
_OPTIONAL = (
    "AZ_BATCH_NODE_MOUNTS_DIR",
    "AZ_BATCH_CERTIFICATES_DIR",
    "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES",
    "AZ_BATCH_RESERVED_EPHEMERAL_DISK_SPACE_BYTES",
    "AZ_BATCH_OS_RESERVED_EPHEMERAL_DISK_SPACE_BYTES",
    "AZ_BATCH_JOB_ID",
    "AZ_BATCH_TASK_ID",
    "AZ_BATCH_HOST_LIST",
    "AZ_BATCH_MASTER_NODE",
    "AZ_BATCH_IS_CURRENT_NODE_MASTER",
    "AZ_BATCH_TASK_SHARED_DIR",
)
_MULTI_INSTANCE = ("AZ_BATCH_HOST_LIST", "AZ_BATCH_MASTER_NODE")


class _Parser:
    """Collects problems while reading variables, so all are reported together."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[Problem] = []

    def fail(self, name: str, message: str) -> None:
        value = self.environ.get(name)
        where = name if value is None else f"{name}={shown(name, value)}"
        self.problems.append(Problem(where, message))

    def raw(self, name: str, required: bool) -> Optional[str]:
        value = self.environ.get(name)
        if value is None:
            if required:
                self.fail(
                    name,
                    "is not set; Batch sets it on every node, so this is not "
                    "a Batch task environment (or an --env-file lacks it)",
                )
            return None
        if value.strip() == "":
            self.fail(name, "is empty; expected a value")
            return None
        return value

    def text(self, name: str) -> str:
        return self.raw(name, required=True) or ""

    def convert(
        self, name: str, required: bool, conv: Callable[[str], T], expected: str
    ) -> Optional[T]:
        value = self.raw(name, required)
        if value is None:
            return None
        try:
            return conv(value)
        except ValueError:
            self.fail(name, f"expected {expected}")
            return None

    def path(self, name: str, required: bool = True) -> Optional[str]:
        value = self.raw(name, required)
        if value is None:
            return None
        return self.check_path(name, value)

    def check_path(self, name: str, value: str) -> Optional[str]:
        if _WINDOWS_PATH.search(value):
            self.fail(name, "is a Windows path; node-agent supports Linux pools only")
            return None
        if not value.startswith("/"):
            self.fail(name, "expected an absolute path (starting with /)")
            return None
        return posixpath.normpath(value)

    def parse(self) -> BatchEnv:
        env = self.environ
        account_url = self.convert("AZ_BATCH_ACCOUNT_URL", True, _https_url, "an https:// URL")
        is_dedicated = self.convert("AZ_BATCH_NODE_IS_DEDICATED", True, _boolean, "true or false")
        identity = self.convert(
            "AZ_BATCH_TASK_USER_IDENTITY",
            True,
            UserIdentity,
            "one of " + ", ".join(u.value for u in UserIdentity),
        )
        node_id = self.text("AZ_BATCH_NODE_ID")
        if node_id and not re.fullmatch(r"[A-Za-z0-9_.-]+", node_id):
            self.fail("AZ_BATCH_NODE_ID", "expected letters, digits, '_', '-' and '.' only")
        root = self.path("AZ_BATCH_NODE_ROOT_DIR")
        shared = self.path("AZ_BATCH_NODE_SHARED_DIR")
        startup = self.path("AZ_BATCH_NODE_STARTUP_DIR")
        if root is not None:
            for name, value, leaf in (
                ("AZ_BATCH_NODE_SHARED_DIR", shared, "shared"),
                ("AZ_BATCH_NODE_STARTUP_DIR", startup, "startup"),
            ):
                if value is not None and value != posixpath.join(root, leaf):
                    self.fail(
                        name,
                        f"expected {posixpath.join(root, leaf)!r}, the node root's "
                        f"{leaf} dir where Batch puts it",
                    )
        node = Node(
            id=node_id,
            is_dedicated=bool(is_dedicated),
            root_dir=root or "",
            shared_dir=shared or "",
            startup_dir=startup or "",
            mounts_dir=self.path("AZ_BATCH_NODE_MOUNTS_DIR", required=False),
        )
        task = Task(
            kind=TaskKind.START,
            dir=self.path("AZ_BATCH_TASK_DIR") or "",
            working_dir=self.path("AZ_BATCH_TASK_WORKING_DIR") or "",
            user=self.text("AZ_BATCH_TASK_USER"),
            user_identity=identity or UserIdentity.TASK_NON_ADMIN,
            job_id=self.raw("AZ_BATCH_JOB_ID", required=False),
            task_id=self.raw("AZ_BATCH_TASK_ID", required=False),
            multi_instance=self.multi_instance(),
        )
        task = self.task_kind(task)
        reserved = ReservedDiskSpace(
            task_bytes=self.byte_count("AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"),
            node_bytes=self.byte_count("AZ_BATCH_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"),
            os_bytes=self.byte_count("AZ_BATCH_OS_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"),
        )
        result = BatchEnv(
            account=Account(name=self.text("AZ_BATCH_ACCOUNT_NAME"), url=account_url or ""),
            pool_id=self.text("AZ_BATCH_POOL_ID"),
            node=node,
            task=task,
            certificates_dir=self.path("AZ_BATCH_CERTIFICATES_DIR", required=False),
            reserved_disk_space=reserved,
            packages=self.packages(node.applications_dir if root else None),
            extra=tuple(
                Variable(name, env[name])
                for name in sorted(env)
                if name.startswith(BATCH_PREFIX)
                and not name.startswith(PACKAGE_PREFIX)
                and name not in _REQUIRED
                and name not in _OPTIONAL
            ),
        )
        if self.problems:
            raise InvalidInput("invalid Batch environment", self.problems)
        return result

    def byte_count(self, name: str) -> Optional[int]:
        count = self.convert(name, False, int, "a whole number of bytes")
        if count is not None and count < 0:
            self.fail(name, "expected a whole number of bytes, not negative")
        return count

    def multi_instance(self) -> Optional[MultiInstance]:
        present = [n for n in _MULTI_INSTANCE if n in self.environ]
        if not present:
            return None
        hosts = self.convert("AZ_BATCH_HOST_LIST", True, _host_list, "comma-separated addresses")
        master = self.convert("AZ_BATCH_MASTER_NODE", True, _host_port, "ADDRESS:PORT")
        is_master = self.convert(
            "AZ_BATCH_IS_CURRENT_NODE_MASTER", False, _boolean, "true or false"
        )
        shared = self.path("AZ_BATCH_TASK_SHARED_DIR", required=False)
        if hosts is None or master is None:
            return None
        return MultiInstance(
            hosts=hosts, master=master, is_master=is_master, task_shared_dir=shared
        )

    def task_kind(self, task: Task) -> Task:
        has_job, has_task = task.job_id is not None, task.task_id is not None
        if has_job != has_task:
            missing = "AZ_BATCH_TASK_ID" if has_job else "AZ_BATCH_JOB_ID"
            self.fail(
                missing,
                "is not set, but a job task has both AZ_BATCH_JOB_ID and "
                "AZ_BATCH_TASK_ID (a start task has neither)",
            )
        kind = TaskKind.START
        if has_job and has_task:
            kind = TaskKind.JOB
        if any(n in self.environ for n in _MULTI_INSTANCE):
            kind = TaskKind.MULTI_INSTANCE
        return Task(**{**task.__dict__, "kind": kind})

    def packages(self, applications_dir: Optional[str]) -> tuple[AppPackage, ...]:
        pairs: list[tuple[str, str]] = []
        for name in sorted(self.environ):
            if not name.startswith(PACKAGE_PREFIX):
                continue
            suffix = name[len(PACKAGE_PREFIX) :]
            path = self.path(name)
            if path is None:
                continue
            if not suffix or flatten(suffix) != suffix.lower():
                self.fail(
                    name,
                    "expected AZ_BATCH_APP_PACKAGE_<id> or AZ_BATCH_APP_PACKAGE_<id>_<version>",
                )
                continue
            if applications_dir is not None and posixpath.dirname(path) != applications_dir:
                self.fail(
                    name,
                    f"expected a package folder directly in {applications_dir!r}, "
                    "where Batch extracts application packages",
                )
                continue
            pairs.append((suffix, path))
        packages, misfits = group_packages(pairs)
        for suffix, path in misfits:
            self.fail(
                PACKAGE_PREFIX + suffix,
                f"folder {posixpath.basename(path)!r} is not this package's: Batch names "
                "it <id><version><timestamp> after the variable's id and version",
            )
        return tuple(packages)


def _boolean(value: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError(value)


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(value)
    return value


def _host_list(value: str) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in value.split(","))
    if not all(hosts):
        raise ValueError(value)
    return hosts


def _host_port(value: str) -> HostPort:
    address, sep, port_text = value.rpartition(":")
    address = address.strip("[]")
    port = int(port_text)  # ValueError for a missing or non-numeric port
    if not sep or not address or not 0 < port < 65536:
        raise ValueError(value)
    return HostPort(address=address, port=port)
