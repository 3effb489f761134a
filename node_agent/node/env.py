"""The typed model of a Batch node's environment (the ``AZ_BATCH_*`` variables).

``BatchEnv.from_environ`` is pure: it reads a mapping, never the file system.

Strict only where ``run`` cannot do without: the node root and the shared dir must
be absolute Linux paths, or it raises ``InvalidInput`` listing every such fault.
Everything else is read leniently, because Batch documents its environment loosely
("exact paths are implementation details") and real nodes differ: an odd, missing
or unreadable value becomes a warning in ``BatchEnv.warnings`` and a safe reading
(``None``, "version unknown", an id with its odd characters replaced).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional, TypeVar
from urllib.parse import urlsplit

from node_agent.common.errors import InvalidInput, Problem
from node_agent.common.redact import shown
from node_agent.node.env_model import (
    BATCH_ID,
    Account,
    HostPort,
    MultiInstance,
    Node,
    ReservedDiskSpace,
    Task,
    TaskKind,
    UserIdentity,
    Variable,
    safe_id,
)
from node_agent.node.packages import PREFIX as PACKAGE_PREFIX
from node_agent.node.packages import AppPackage, PackageChoice, choose_package, read_packages

BATCH_PREFIX = "AZ_BATCH_"
_WINDOWS_PATH = re.compile(r"\A(?:[A-Za-z]:[\\/]|\\\\)|\\")
POOL_ID_MAX = 64  # Batch's limit; node ids (Batch's own) have none documented

T = TypeVar("T")


@dataclass(frozen=True)
class BatchEnv:
    """Everything the ``AZ_BATCH_*`` environment says about the node and the task,
    and what was odd about it (``warnings``: nothing ``run`` needs)."""

    account: Account
    pool_id: Optional[str]
    node: Node
    task: Task
    certificates_dir: Optional[str]
    reserved_disk_space: ReservedDiskSpace
    packages: tuple[AppPackage, ...]
    extra: tuple[Variable, ...]
    warnings: tuple[Problem, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BatchEnv:
        """Build the model from an environment, or raise ``InvalidInput`` with every
        fault in what ``run`` needs (the node root, the shared dir)."""
        return _Parser(environ).parse()

    def choose_package(self, package_id: str) -> Optional[PackageChoice]:
        """The folder used for this package id (case-insensitive, ``-`` and ``_``
        alike), why, and its other folders; None when the node has no such package."""
        return choose_package(self.packages, package_id)

    def find_package(self, package_id: str) -> Optional[AppPackage]:
        """The folder used for this package id (see ``choose_package``)."""
        choice = self.choose_package(package_id)
        return choice.package if choice else None


class Need(Enum):
    """How much the agent depends on a variable."""

    REQUIRED = "required"  # run cannot work without it: a fault is an error
    EXPECTED = "expected"  # Batch sets it on every node: missing is a warning
    OPTIONAL = "optional"  # set on some nodes only: missing is fine


_NEEDS = {
    "AZ_BATCH_NODE_ROOT_DIR": Need.REQUIRED,
    "AZ_BATCH_NODE_SHARED_DIR": Need.REQUIRED,
    "AZ_BATCH_ACCOUNT_NAME": Need.EXPECTED,
    "AZ_BATCH_ACCOUNT_URL": Need.EXPECTED,
    "AZ_BATCH_POOL_ID": Need.EXPECTED,
    "AZ_BATCH_NODE_ID": Need.EXPECTED,
    "AZ_BATCH_NODE_IS_DEDICATED": Need.EXPECTED,
    "AZ_BATCH_NODE_STARTUP_DIR": Need.EXPECTED,
    "AZ_BATCH_TASK_DIR": Need.EXPECTED,
    "AZ_BATCH_TASK_WORKING_DIR": Need.EXPECTED,
    # Undocumented, though every real node seen has them.
    "AZ_BATCH_TASK_USER": Need.EXPECTED,
    "AZ_BATCH_TASK_USER_IDENTITY": Need.EXPECTED,
    "AZ_BATCH_NODE_STARTUP_WORKING_DIR": Need.OPTIONAL,
    "AZ_BATCH_NODE_MOUNTS_DIR": Need.OPTIONAL,
    "AZ_BATCH_CERTIFICATES_DIR": Need.OPTIONAL,
    "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": Need.OPTIONAL,
    "AZ_BATCH_RESERVED_DISK_SPACE_BYTES": Need.OPTIONAL,
    "AZ_BATCH_JOB_ID": Need.OPTIONAL,
    "AZ_BATCH_TASK_ID": Need.OPTIONAL,
    "AZ_BATCH_HOST_LIST": Need.OPTIONAL,
    "AZ_BATCH_MASTER_NODE": Need.OPTIONAL,
    "AZ_BATCH_IS_CURRENT_NODE_MASTER": Need.OPTIONAL,
    "AZ_BATCH_TASK_SHARED_DIR": Need.OPTIONAL,
}
_MISSING = {
    Need.REQUIRED: "is not set; Batch sets it on every node, so this is not a Batch task "
    "environment (or an --env-file lacks it)",
    Need.EXPECTED: "is not set, though Batch sets it on every node; node-agent does without it",
}
_UNDOCUMENTED_MISSING = {
    "AZ_BATCH_TASK_USER": "is not set (it is undocumented); node-agent runs as this "
    "process's own user",
    "AZ_BATCH_TASK_USER_IDENTITY": "is not set (it is undocumented); the identity is unknown",
}
_MULTI_INSTANCE = ("AZ_BATCH_HOST_LIST", "AZ_BATCH_MASTER_NODE")


class _Parser:
    """Collects errors and warnings while reading variables, so all are reported
    together."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def report(self, name: str, message: str, fault: bool = True) -> None:
        """An error when ``name`` is required and its value is at fault, else a warning."""
        value = self.environ.get(name)
        where = name if value is None else f"{name}={shown(name, value)}"
        error = fault and _NEEDS.get(name, Need.OPTIONAL) is Need.REQUIRED
        (self.errors if error else self.warnings).append(Problem(where, message))

    def raw(self, name: str) -> Optional[str]:
        value = self.environ.get(name)
        need = _NEEDS.get(name, Need.OPTIONAL)
        if value is None:
            message = _UNDOCUMENTED_MISSING.get(name) or _MISSING.get(need)
            if message:
                self.report(name, message)
            return None
        if value.strip() == "":
            self.report(name, "is empty; expected a value")
            return None
        return value

    def convert(self, name: str, conv: Callable[[str], T], expected: str) -> Optional[T]:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return conv(value)
        except ValueError:
            self.report(name, f"expected {expected}")
            return None

    def path(self, name: str) -> Optional[str]:
        value = self.raw(name)
        if value is None:
            return None
        if _WINDOWS_PATH.search(value):
            self.report(name, "is a Windows path; node-agent supports Linux pools only")
            return None
        if not value.startswith("/"):
            self.report(name, "expected an absolute path (starting with /)")
            return None
        return posixpath.normpath(value)

    def ident(self, name: str, limit: Optional[int] = None) -> Optional[str]:
        value = self.raw(name)
        if value is None:
            return None
        too_long = limit is not None and len(value) > limit
        if BATCH_ID.fullmatch(value) and not too_long:
            return value
        safe = safe_id(value)[:limit]
        most = f", at most {limit} of them" if limit else ""
        self.report(
            name, f"expected letters, digits, '_' and '-' only{most}; shown and used as {safe!r}"
        )
        return safe

    def parse(self) -> BatchEnv:
        root = self.path("AZ_BATCH_NODE_ROOT_DIR")
        shared = self.path("AZ_BATCH_NODE_SHARED_DIR")
        startup = self.path("AZ_BATCH_NODE_STARTUP_DIR")
        if root is not None:
            for name, value, leaf in (
                ("AZ_BATCH_NODE_SHARED_DIR", shared, "shared"),
                ("AZ_BATCH_NODE_STARTUP_DIR", startup, "startup"),
            ):
                usual = posixpath.join(root, leaf)
                if value is not None and value != usual:
                    self.report(
                        name,
                        f"is not {usual!a}, where Batch usually puts it (paths are "
                        "Batch's implementation details); used as it is",
                        fault=False,
                    )
        node = Node(
            id=self.ident("AZ_BATCH_NODE_ID"),
            is_dedicated=self.convert(
                "AZ_BATCH_NODE_IS_DEDICATED",
                _boolean,
                "true or false; treated as unknown, which node-agent handles as Spot",
            ),
            root_dir=root or "",
            shared_dir=shared or "",
            startup_dir=startup,
            startup_working_dir=self.path("AZ_BATCH_NODE_STARTUP_WORKING_DIR"),
            mounts_dir=self.path("AZ_BATCH_NODE_MOUNTS_DIR"),
        )
        task = Task(
            kind=TaskKind.START,
            dir=self.path("AZ_BATCH_TASK_DIR"),
            working_dir=self.path("AZ_BATCH_TASK_WORKING_DIR"),
            user=self.raw("AZ_BATCH_TASK_USER"),
            user_identity=self.convert(
                "AZ_BATCH_TASK_USER_IDENTITY",
                UserIdentity,
                "one of " + ", ".join(u.value for u in UserIdentity) + "; the identity is unknown",
            ),
            job_id=self.raw("AZ_BATCH_JOB_ID"),
            task_id=self.raw("AZ_BATCH_TASK_ID"),
            multi_instance=self.multi_instance(),
        )
        reserved = ReservedDiskSpace(
            task_bytes=self.byte_count("AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"),
            agent_bytes=self.byte_count("AZ_BATCH_RESERVED_DISK_SPACE_BYTES"),
        )
        account = Account(
            name=self.raw("AZ_BATCH_ACCOUNT_NAME"),
            url=self.convert("AZ_BATCH_ACCOUNT_URL", _https_url, "an https:// URL"),
        )
        pool_id = self.ident("AZ_BATCH_POOL_ID", POOL_ID_MAX)
        certificates_dir = self.path("AZ_BATCH_CERTIFICATES_DIR")
        packages = self.packages(node.applications_dir if root else None)
        task = self.task_kind(task)
        if self.errors:
            raise InvalidInput("invalid Batch environment", self.errors)
        return BatchEnv(
            account=account,
            pool_id=pool_id,
            node=node,
            task=task,
            certificates_dir=certificates_dir,
            reserved_disk_space=reserved,
            packages=packages,
            extra=tuple(
                Variable(name, self.environ[name])
                for name in sorted(self.environ)
                if name.startswith(BATCH_PREFIX)
                and not name.startswith(PACKAGE_PREFIX)
                and name not in _NEEDS
            ),
            warnings=tuple(self.warnings),
        )

    def byte_count(self, name: str) -> Optional[int]:
        count = self.convert(name, int, "a whole number of bytes")
        if count is not None and count < 0:
            self.report(name, "expected a whole number of bytes, not negative")
            return None
        return count

    def multi_instance(self) -> Optional[MultiInstance]:
        if not any(n in self.environ for n in _MULTI_INSTANCE):
            return None
        hosts = self.convert("AZ_BATCH_HOST_LIST", _host_list, "comma-separated addresses")
        master = self.convert("AZ_BATCH_MASTER_NODE", _host_port, "ADDRESS:PORT")
        is_master = self.convert("AZ_BATCH_IS_CURRENT_NODE_MASTER", _boolean, "true or false")
        shared = self.path("AZ_BATCH_TASK_SHARED_DIR")
        if hosts is None or master is None:
            return None
        return MultiInstance(
            hosts=hosts, master=master, is_master=is_master, task_shared_dir=shared
        )

    def task_kind(self, task: Task) -> Task:
        has_job, has_task = task.job_id is not None, task.task_id is not None
        if has_job != has_task:
            self.report(
                "AZ_BATCH_TASK_ID" if has_job else "AZ_BATCH_JOB_ID",
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
        found: list[tuple[str, str]] = []
        for name in sorted(self.environ):
            if name.startswith(PACKAGE_PREFIX):
                path = self.path(name)
                if path is not None:
                    found.append((name, path))
        packages, warnings = read_packages(found, applications_dir, shown)
        self.warnings.extend(warnings)
        return packages


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
