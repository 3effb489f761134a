"""How ``node-agent env`` shows the model: a readable summary or a stable JSON shape,
each with the environment's warnings.

Both go through ``redact`` so no secret reaches the output, and no value can pass
for another line of it.
"""

from __future__ import annotations

import os
import pwd
from typing import Any, Optional

from node_agent.common.redact import REDACTED, printable
from node_agent.node.env import BatchEnv

JSON_SCHEMA_VERSION = 2


def process_user() -> str:
    """This process's user name (its uid when it has none)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def user_text(env: BatchEnv) -> str:
    """Who the task runs as: Batch's variables, or this process's own user where the
    (undocumented) variables are missing."""
    task = env.task
    user = task.user or f"{process_user()} (this process's own user)"
    identity = task.user_identity.value if task.user_identity else "identity unknown"
    return f"{user}, {identity}"


def env_to_json(env: BatchEnv) -> dict[str, Any]:
    """The model as the JSON document documented in docs/environment.md (``schema`` 2)."""
    task = env.task
    multi = task.multi_instance
    return {
        "schema": JSON_SCHEMA_VERSION,
        "account": {"name": env.account.name, "url": env.account.url},
        "pool_id": env.pool_id,
        "node": {
            "id": env.node.id,
            "is_dedicated": env.node.is_dedicated,
            "is_spot": env.node.is_spot,
            "root_dir": env.node.root_dir,
            "shared_dir": env.node.shared_dir,
            "startup_dir": env.node.startup_dir,
            "startup_working_dir": env.node.startup_working_dir,
            "mounts_dir": env.node.mounts_dir,
        },
        "task": {
            "kind": task.kind.value,
            "dir": task.dir,
            "working_dir": task.working_dir,
            "user": task.user,
            "user_identity": task.user_identity.value if task.user_identity else None,
            "job_id": task.job_id,
            "task_id": task.task_id,
            "multi_instance": None
            if multi is None
            else {
                "hosts": list(multi.hosts),
                "master": {"address": multi.master.address, "port": multi.master.port},
                "is_master": multi.is_master,
                "task_shared_dir": multi.task_shared_dir,
            },
        },
        "certificates_dir": env.certificates_dir,
        "reserved_disk_space": {
            "task_bytes": env.reserved_disk_space.task_bytes,
            "agent_bytes": env.reserved_disk_space.agent_bytes,
        },
        "packages": [
            {
                "id": p.id,
                "version": p.version,
                "is_default": p.is_default,
                "path": p.path,
                "variables": list(p.variables),
            }
            for p in env.packages
        ],
        "extra": {v.name: REDACTED if v.is_secret else v.value for v in env.extra},
        "warnings": [{"where": w.where, "message": w.message} for w in env.warnings],
    }


def _opt(value: Optional[object]) -> str:
    return "-" if value is None else str(value)


def env_summary(env: BatchEnv) -> str:
    """A few aligned lines an operator can read at a glance, the warnings last."""
    node, task = env.node, env.task
    kind = "dedicated or Spot unknown (handled as Spot)"
    if node.is_dedicated is not None:
        kind = "dedicated" if node.is_dedicated else "Spot (can be preempted)"
    rows = [
        ("account", f"{_opt(env.account.name)} ({_opt(env.account.url)})"),
        ("pool", _opt(env.pool_id)),
        ("node", f"{_opt(node.id)}, {kind}"),
        ("node root", node.root_dir),
        ("shared dir", node.shared_dir),
        ("startup dir", _opt(node.startup_dir)),
        ("startup wd", _opt(node.startup_working_dir)),
        ("mounts dir", _opt(node.mounts_dir)),
        ("task", task.kind.value + (f" {task.job_id}/{task.task_id}" if task.job_id else "")),
        ("task dir", _opt(task.dir)),
        ("working dir", _opt(task.working_dir)),
        ("user", user_text(env)),
        ("certificates", _opt(env.certificates_dir)),
    ]
    if task.multi_instance is not None:
        multi = task.multi_instance
        rows.append(("hosts", ", ".join(multi.hosts)))
        rows.append(("master", f"{multi.master.address} port {multi.master.port}"))
    reserved = env.reserved_disk_space
    if reserved.task_bytes is not None or reserved.agent_bytes is not None:
        rows.append(
            (
                "reserved disk",
                f"DiskFull below {_opt(reserved.task_bytes)}, Batch agent "
                f"{_opt(reserved.agent_bytes)} bytes",
            )
        )
    for package in env.packages:
        version = package.version or "version unknown"
        default = ", default" if package.is_default else ""
        where = (
            package.path if package.readings else f"{package.path} ({', '.join(package.variables)})"
        )
        rows.append((f"package {package.id or '?'}", f"{version}{default}: {where}"))
    if not env.packages:
        rows.append(("packages", "none"))
    for variable in env.extra:
        rows.append((variable.name, REDACTED if variable.is_secret else variable.value))
    rows.extend(("warning", str(w)) for w in env.warnings)
    cells = [(printable(label), printable(value)) for label, value in rows]
    width = max(len(label) for label, _ in cells)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in cells)
