"""Checks of the start task's setup: the environment, the settings, PATH."""

from __future__ import annotations

import os

from node_agent.doctor.context import NEEDS_ENV, Context
from node_agent.doctor.report import Row, Status
from node_agent.node.env_model import TaskKind
from node_agent.node.envview import user_text


def check_environment(ctx: Context) -> list[Row]:
    """The AZ_BATCH_* environment, the kind of task and the user identity."""
    if ctx.env is None:
        return [
            Row(
                "environment",
                Status.FAILED,
                "; ".join(ctx.env_problems),
                "fix each variable named above (node-agent env lists them)",
            )
        ]
    env = ctx.env
    spot = "dedicated or Spot unknown"
    if env.node.is_dedicated is not None:
        spot = "dedicated" if env.node.is_dedicated else "Spot"
    rows = [
        Row(
            "environment",
            Status.OK,
            f"pool {env.pool_id or '-'}, node {env.node.id or '-'} ({spot})"
            + (f"; {len(env.warnings)} warning(s)" if env.warnings else ""),
        )
    ]
    rows.extend(
        Row(
            "environment",
            Status.WARNING,
            str(warning),
            "nothing node-agent needs: the worker runs; correct the pool's configuration "
            "if this is not meant to be",
        )
        for warning in env.warnings
    )
    kind = env.task.kind
    rows.append(
        Row(
            "task",
            Status.OK if kind is TaskKind.START else Status.WARNING,
            f"{kind.value} task",
            None
            if kind is TaskKind.START
            else "node-agent runs as the pool's start task; this is another task's view",
        )
    )
    identity = env.task.user_identity
    admin = "node-agent needs no sudo, apt or systemd"
    if identity is not None:
        admin = (
            "admin, though node-agent needs no sudo"
            if identity.is_admin
            else "non-admin: no sudo, apt or systemd, and node-agent needs none"
        )
    rows.append(Row("user", Status.OK, f"{user_text(env)}: {admin}"))
    return rows


def check_settings(ctx: Context) -> list[Row]:
    """The operator's settings."""
    if ctx.settings is None:
        return [
            Row(
                "settings",
                Status.FAILED,
                "; ".join(ctx.settings_problems),
                "correct the named settings in the pool's start task environment or "
                "node-agent.yaml",
            )
        ]
    return [
        Row(
            "settings",
            Status.OK,
            f"Manager {ctx.settings.manager_url}, worker flavour "
            f"{ctx.flavour.value if ctx.flavour else '?'}",
        )
    ]


def check_path(ctx: Context) -> list[Row]:
    """The shared dir is on PATH, as Batch promises."""
    if ctx.env is None:
        return [Row("PATH", Status.SKIPPED, NEEDS_ENV)]
    shared = ctx.env.node.shared_dir
    if shared in ctx.environ.get("PATH", "").split(os.pathsep):
        return [Row("PATH", Status.OK, f"has the shared dir {shared}")]
    return [
        Row(
            "PATH",
            Status.FAILED,
            f"lacks the shared dir {shared}",
            "Batch puts it on every task's PATH: do not replace PATH in the start task's "
            "environment settings",
        )
    ]
