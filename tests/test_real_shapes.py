"""Nodes of real shapes that a strict reading of the environment refused: the real
agent starts the worker on each and logs what it went without; ``env`` and
``doctor`` list what is odd. Stand-in worker, Manager and Metadata Service."""

from __future__ import annotations

import json
import os
import pwd
import signal
from pathlib import Path
from typing import Callable, Optional

import pytest

from node_agent import bootstrap
from node_agent.bootstrap.survey import survey
from node_agent.cli import main
from node_agent.common.errors import EXIT_OK
from node_agent.config.settings import load_settings
from node_agent.doctor import Context, Status
from node_agent.doctor.setup_checks import check_environment
from node_agent.node.envfile import load_env_file
from node_agent.node.layout import default_worker_name
from tests.agent import Agent, worker_node
from tests.helpers import AZ_ENV
from tests.nodes import make_node

Start = Callable[..., Agent]
SHAPES = ["no_identity", "shared_elsewhere", "unparseable_package", "two_folders"]


@pytest.mark.parametrize("fixture", SHAPES)
def test_run_starts_the_worker_and_logs_what_it_went_without(
    tmp_path: Path, run_agent: Start, fixture: str
) -> None:
    node = worker_node(tmp_path / "node", fixture)
    warnings = node.env.warnings
    assert warnings  # each shape is odd somewhere
    agent = run_agent("count,wait", node=node)
    state = agent.wait_running()
    stderr = agent.stderr.decode()
    for warning in warnings:
        assert f"node-agent: WARNING: environment: {warning} (node-agent goes on" in stderr
    worker = node.package_dir("flamenco-worker")
    assert state["worker_executable"] == str(worker / "flamenco-worker")
    for tool in ("blender", "ffmpeg"):
        target = os.readlink(node.shared / tool)
        assert Path(target).parent == node.package_dir(tool)
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK


def test_two_folders_use_the_default_then_the_highest_version(tmp_path: Path) -> None:
    # By folder name the first of each pair is the other one; make_node puts the
    # executables in the chosen folders only, so a wrong choice fails the plan.
    node = make_node(tmp_path / "root", "two_folders")
    settings = load_settings(node.environ, {}, None)
    plan = bootstrap.plan(node.env, settings, survey(node.env, settings))
    links = {Path(a.path).name: Path(a.target or "").parent.name for a in plan.changes if a.target}
    assert links == {
        "blender": "blender4.1.02025-01-20-09-00",  # the pool's default, not 4.2.3
        "ffmpeg": "ffmpeg10.02025-03-10-14-18",  # 10.0 over 4.4.2, though it sorts later
        "ffprobe": "ffmpeg10.02025-03-10-14-18",
    }
    assert plan.worker_executable.endswith("/flamenco-worker3.5.22025-03-10-14-15/flamenco-worker")


def test_unparseable_worker_folder_is_run_as_v3_with_a_warning(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "unparseable_package")
    settings = load_settings(node.environ, {}, None)
    plan = bootstrap.plan(node.env, settings, survey(node.env, settings))
    assert plan.flavour.guessed and plan.flavour.flavour.value == "v3"
    assert any("version unknown does not say" in n for n in plan.notes)


@pytest.mark.parametrize("fixture", SHAPES)
def test_env_and_doctor_list_what_is_odd(fixture: str, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = str(AZ_ENV / f"{fixture}.env")
    assert main(["env", "--env-file", env_file]) == EXIT_OK
    summary = capsys.readouterr().out
    assert main(["env", "--json", "--env-file", env_file]) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    rows = check_environment(Context.from_environ(load_env_file(env_file)))
    flagged = [r.found for r in rows if r.status is Status.WARNING]
    listed = [
        line.split(None, 1)[1] for line in summary.splitlines() if line.startswith("warning ")
    ]
    assert document["warnings"]
    for shown in (flagged, listed):
        assert shown == [f"{w['where']}: {w['message']}" for w in document["warnings"]]


def test_no_identity_shows_the_process_user(capsys: pytest.CaptureFixture[str]) -> None:
    env_file = str(AZ_ENV / "no_identity.env")
    assert main(["env", "--env-file", env_file]) == EXIT_OK
    user = f"{pwd.getpwuid(os.getuid()).pw_name} (this process's own user), identity unknown"
    assert f"user                     {user}\n" in capsys.readouterr().out
    rows = check_environment(Context.from_environ(load_env_file(env_file)))
    [row] = [r for r in rows if r.check == "user"]
    assert row.found == f"{user}: node-agent needs no sudo, apt or systemd"


@pytest.mark.parametrize(
    "pool_id, node_id, name",
    [
        ("render\nfarm", "tvm-1", "render_farm-tvm-1"),
        ("ren\u202eder", "tvm-1", "ren_der-tvm-1"),
        (None, "tvm-1", "tvm-1"),
        ("render", None, "render-node-7_local"),  # the host name stands in
    ],
)
def test_worker_name_only_ever_has_safe_characters(
    pool_id: Optional[str], node_id: Optional[str], name: str
) -> None:
    assert default_worker_name(pool_id, node_id, "node-7.local") == name


def test_a_bad_pool_id_never_reaches_the_worker_config(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "newer_spot")
    node.environ["AZ_BATCH_POOL_ID"] = "spot\nworker_name: evil"
    settings = load_settings(node.environ, {}, None)
    plan = bootstrap.plan(node.env, settings, survey(node.env, settings))
    assert plan.worker_name == "spot_worker_name__evil-0f6a1c2e9d8b"
    [config] = [a for a in plan.changes if a.path.endswith("flamenco-worker.yaml")]
    assert b"evil" not in (config.content or b"").replace(plan.worker_name.encode(), b"")
