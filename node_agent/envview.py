"""How ``node-agent env`` shows the model: a readable summary or a stable JSON shape.

Both go through ``redact`` so no secret reaches the output.
"""

from __future__ import annotations

from typing import Any, Optional

from node_agent.env import BatchEnv
from node_agent.redact import REDACTED

JSON_SCHEMA_VERSION = 1


def env_to_json(env: BatchEnv) -> dict[str, Any]:
    """The model as the JSON document documented in the README (``schema`` 1)."""
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
            "mounts_dir": env.node.mounts_dir,
        },
        "task": {
            "kind": task.kind.value,
            "dir": task.dir,
            "working_dir": task.working_dir,
            "user": task.user,
            "user_identity": task.user_identity.value,
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
            "node_bytes": env.reserved_disk_space.node_bytes,
            "os_bytes": env.reserved_disk_space.os_bytes,
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
    }


def _opt(value: Optional[object]) -> str:
    return "-" if value is None else str(value)


def env_summary(env: BatchEnv) -> str:
    """A few aligned lines an operator can read at a glance."""
    node, task = env.node, env.task
    kind = "dedicated" if node.is_dedicated else "Spot (can be preempted)"
    rows = [
        ("account", f"{env.account.name} ({env.account.url})"),
        ("pool", env.pool_id),
        ("node", f"{node.id}, {kind}"),
        ("node root", node.root_dir),
        ("shared dir", node.shared_dir),
        ("startup dir", node.startup_dir),
        ("mounts dir", _opt(node.mounts_dir)),
        ("task", task.kind.value + (f" {task.job_id}/{task.task_id}" if task.job_id else "")),
        ("task dir", task.dir),
        ("working dir", task.working_dir),
        ("user", f"{task.user} ({task.user_identity.value})"),
        ("certificates", _opt(env.certificates_dir)),
    ]
    if task.multi_instance is not None:
        multi = task.multi_instance
        rows.append(("hosts", ", ".join(multi.hosts)))
        rows.append(("master", f"{multi.master.address} port {multi.master.port}"))
    reserved = env.reserved_disk_space
    if any(v is not None for v in (reserved.task_bytes, reserved.node_bytes, reserved.os_bytes)):
        rows.append(
            (
                "reserved disk",
                f"task {_opt(reserved.task_bytes)}, node {_opt(reserved.node_bytes)}, "
                f"os {_opt(reserved.os_bytes)} bytes",
            )
        )
    for package in env.packages:
        version = package.version or "version unknown"
        default = ", default" if package.is_default else ""
        rows.append((f"package {package.id or '?'}", f"{version}{default}: {package.path}"))
    if not env.packages:
        rows.append(("packages", "none"))
    for variable in env.extra:
        rows.append((variable.name, REDACTED if variable.is_secret else variable.value))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)
