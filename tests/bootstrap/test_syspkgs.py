"""Admin pools, optionally: who may install, what to install, and the apt-get calls
(run against a stand-in apt-get, never the machine's own)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from node_agent.bootstrap import syspkgs
from node_agent.bootstrap.syspkgs import (
    APT_LOCK_WAIT,
    elevated,
    ensure_system_packages,
    install,
    plan_install,
)
from node_agent.config.settings import load_settings
from node_agent.node.env_model import UserIdentity
from tests.nodes import make_node, write_executable

APT = ("apt-get", *APT_LOCK_WAIT)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The agent's log records (its logger may not propagate: the CLI sets it up so)."""
    logger = logging.getLogger("node_agent")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # each record once, however the logger was set up
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.mark.parametrize(
    "identity, uid, expected",
    [
        (UserIdentity.TASK_NON_ADMIN, 1001, False),
        (UserIdentity.POOL_NON_ADMIN, 1000, False),
        (UserIdentity.TASK_ADMIN, 1001, True),
        (UserIdentity.POOL_ADMIN, 1000, True),
        (UserIdentity.TASK_NON_ADMIN, 0, True),  # root, whatever Batch called it
        (None, 1001, False),  # no identity variable (undocumented): not admin
        (None, 0, True),
    ],
)
def test_who_may_install(identity: Optional[UserIdentity], uid: int, expected: bool) -> None:
    assert elevated(identity, uid) is expected


def test_plan_install_maps_libraries_to_packages() -> None:
    missing = {
        "blender": ("libXi.so.6", "libGL.so.1", "libnodeagentgreet.so.1"),
        "ffprobe": ("libXi.so.6",),
    }
    plan = plan_install(missing, uid=0)
    assert plan.packages == ("libgl1", "libxi6")
    assert plan.unknown == ("libnodeagentgreet.so.1",)
    assert plan.commands == (
        (*APT, "update"),
        (*APT, "install", "-y", "--no-install-recommends", "libgl1", "libxi6"),
    )
    assert plan_install(missing, uid=1001).commands[1][:3] == ("sudo", "-n", "apt-get")


def test_nothing_missing_runs_nothing() -> None:
    """A node that got its packages at the first start does nothing the next time."""
    assert plan_install({}, uid=0).commands == ()
    assert plan_install({"blender": ("libnodeagentgreet.so.1",)}, uid=0).commands == ()


def _stand_in_apt(bin_dir: Path, exit_code: int) -> Path:
    calls = bin_dir / "calls.txt"
    write_executable(
        bin_dir / "apt-get",
        f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {calls}\n'
        f'[ {exit_code} = 0 ] || echo "E: Unable to locate package libxi6" >&2\n'
        f"exit {exit_code}\n",
    )
    return calls


def test_install_runs_apt_get_and_logs_what_it_installed(
    tmp_path: Path, logged: pytest.LogCaptureFixture
) -> None:
    calls = _stand_in_apt(tmp_path, 0)
    plan = plan_install({"blender": ("libXi.so.6", "libGL.so.1")}, uid=0)
    assert install(plan, {"PATH": str(tmp_path)})
    lock = " ".join(APT_LOCK_WAIT)
    assert calls.read_text().splitlines() == [
        f"noninteractive {lock} update",
        f"noninteractive {lock} install -y --no-install-recommends libgl1 libxi6",
    ]
    assert "install_system_packages: installed libgl1 libxi6" in logged.text


def test_failed_apt_get_is_a_warning(tmp_path: Path, logged: pytest.LogCaptureFixture) -> None:
    calls = _stand_in_apt(tmp_path, 100)
    plan = plan_install({"blender": ("libXi.so.6",)}, uid=0)
    assert not install(plan, {"PATH": str(tmp_path)})
    assert len(calls.read_text().splitlines()) == 1  # no install after a failed update
    [record] = logged.records
    assert record.levelno == logging.WARNING
    assert "exited 100: E: Unable to locate package libxi6" in record.getMessage()


def test_not_elevated_installs_nothing(
    tmp_path: Path, logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node(tmp_path / "root", "newer_spot")  # PoolNonAdmin
    calls = _stand_in_apt(tmp_path, 0)
    environ = {**node.environ, "PATH": str(tmp_path)}
    off = load_settings(node.environ, {}, None)
    ensure_system_packages(node.env, off, environ)
    assert logged.text == ""
    on = load_settings({**node.environ, "NODE_AGENT_INSTALL_SYSTEM_PACKAGES": "true"}, {}, None)
    monkeypatch.setattr(syspkgs.os, "getuid", lambda: 1001)
    ensure_system_packages(node.env, on, environ)
    assert not calls.exists()
    assert (
        "install_system_packages is on, but the start task is not elevated "
        "(PoolNonAdmin, uid 1001): nothing installed"
    ) in logged.text
