"""Admin pools, optionally: install the system packages the tools lack with the
node's package manager (``apt-get``), when the ``install_system_packages``
setting asks for it and the start task runs elevated.

Off by default: the recommended pool stays non-admin, with the libraries bundled
in the packages (``packaging/build-tool --libs``). Idempotent: the loader is asked
what the tools lack, and only when something is missing (and known to come from a
package) does apt run; a node that has everything runs nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from node_agent.bootstrap.libraries import package_for, report
from node_agent.bootstrap.survey import TOOL_PACKAGES, locate
from node_agent.common.log import get_logger
from node_agent.config.settings import Settings
from node_agent.node.env import BatchEnv
from node_agent.node.env_model import UserIdentity

log = get_logger("syspkgs")

APT_TIMEOUT = 900.0  # seconds for each apt-get call
# apt-get waits this long for the package manager's lock instead of failing at
# once: a fresh Ubuntu VM runs its own apt jobs at boot.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=300")


def elevated(identity: Optional[UserIdentity], uid: int) -> bool:
    """Whether the start task may install packages: root, or an admin identity (an
    unknown identity is not admin)."""
    return uid == 0 or (identity is not None and identity.is_admin)


@dataclass(frozen=True)
class Install:
    """What to install for the libraries the tools lack."""

    packages: tuple[str, ...]
    unknown: tuple[str, ...]  # libraries no known package provides
    commands: tuple[tuple[str, ...], ...]  # run in order; empty: nothing to do


def plan_install(missing: Mapping[str, tuple[str, ...]], uid: int) -> Install:
    """The apt-get calls for the libraries each tool lacks (``sudo -n`` unless root)."""
    libraries = dict.fromkeys(lib for libs in missing.values() for lib in libs)
    packages = tuple(sorted({p for p in map(package_for, libraries) if p}))
    unknown = tuple(lib for lib in libraries if package_for(lib) is None)
    if not packages:
        return Install((), unknown, ())
    apt = ("apt-get", *APT_LOCK_WAIT) if uid == 0 else ("sudo", "-n", "apt-get", *APT_LOCK_WAIT)
    commands = (
        (*apt, "update"),
        (*apt, "install", "-y", "--no-install-recommends", *packages),
    )
    return Install(packages, unknown, commands)


def missing_libraries(env: BatchEnv, settings: Settings) -> dict[str, tuple[str, ...]]:
    """Tool -> the libraries the loader cannot find on the system for it."""
    found: dict[str, tuple[str, ...]] = {}
    for tool in settings.tools:
        package = env.find_package(TOOL_PACKAGES.get(tool, tool))
        executable = locate(package.path, tool) if package else None
        answer = report(executable.path) if executable else None
        if answer and answer.missing:
            found[tool] = answer.missing
    return found


def install(plan: Install, environ: Mapping[str, str]) -> bool:
    """Run the plan's apt-get calls; log what was installed, or why not. Never
    raises: a failure is a warning (the tools may still run with bundled libraries)."""
    env = {**environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in plan.commands:
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                errors="replace",
                env=env,
                timeout=APT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("install_system_packages: %s failed: %s", " ".join(command), exc)
            return False
        if result.returncode != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            log.warning(
                "install_system_packages: %s exited %d: %s",
                " ".join(command),
                result.returncode,
                tail or "(no output)",
            )
            return False
    if plan.packages:
        log.info("install_system_packages: installed %s", " ".join(plan.packages))
    return True


def ensure_system_packages(env: BatchEnv, settings: Settings, environ: Mapping[str, str]) -> None:
    """When the setting asks and the task is elevated, install what the tools lack."""
    if not settings.install_system_packages:
        return
    identity, uid = env.task.user_identity, os.getuid()
    if not elevated(identity, uid):
        log.warning(
            "install_system_packages is on, but the start task is not elevated (%s, uid %d): "
            "nothing installed. Bundle the libraries in the packages (packaging/build-tool "
            "--libs), or run the start task as admin",
            identity.value if identity else "identity unknown",
            uid,
        )
        return
    missing = missing_libraries(env, settings)
    plan = plan_install(missing, uid)
    for library in plan.unknown:
        log.warning(
            "install_system_packages: no known package provides %s; install it in the "
            "pool's image, or bundle it (packaging/build-tool --libs)",
            library,
        )
    if not plan.commands:
        log.info("install_system_packages: nothing to install")
        return
    log.info("install_system_packages: installing %s with apt-get", " ".join(plan.packages))
    install(plan, environ)
