"""bootstrap's plan and apply on fake file systems: every edge of a node's life."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Optional

import pytest
import yaml
from pyfakefs import helpers
from pyfakefs.fake_filesystem import FakeFilesystem

from node_agent import bootstrap
from node_agent.bootstrap import ActionKind, Plan, actions
from node_agent.bootstrap.survey import survey
from node_agent.common.errors import InvalidInput, RuntimeFailure
from node_agent.config.settings import Settings, load_settings
from tests.helpers import AZ_ENV
from tests.nodes import TestNode, is_executable_mode, make_node

ROOT = Path("/mnt/batch/tasks")


@pytest.fixture
def fakefs(fs: FakeFilesystem) -> FakeFilesystem:
    fs.add_real_directory(str(AZ_ENV))
    return fs


def _settings(node: TestNode, **overrides: str) -> Settings:
    return load_settings({**node.environ, **overrides}, {}, None)


def _plan(node: TestNode, **overrides: str) -> Plan:
    settings = _settings(node, **overrides)
    return bootstrap.plan(node.env, settings, survey(node.env, settings))


def _run(node: TestNode, **overrides: str) -> list[bootstrap.Action]:
    return bootstrap.apply(_plan(node, **overrides))


def _kinds(plan: Plan) -> dict[str, ActionKind]:
    return {a.path: a.kind for a in plan.actions}


def _problems(node: TestNode, **overrides: str) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        _plan(node, **overrides)
    return [str(p) for p in caught.value.problems]


def test_first_bootstrap_of_a_v3_node(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    plan = _plan(node)
    assert plan.flavour.flavour.value == "v3"
    assert plan.worker_name == "spot-render-v3-0f6a1c2e9d8b"
    shared = node.shared
    assert _kinds(plan) == {
        str(shared / ".node-agent"): ActionKind.CREATE_DIR,
        str(shared / ".node-agent/worker"): ActionKind.CREATE_DIR,
        str(shared / ".node-agent/worker/home"): ActionKind.CREATE_DIR,
        str(shared / "blender"): ActionKind.LINK,
        str(shared / "ffmpeg"): ActionKind.LINK,
        str(shared / "ffprobe"): ActionKind.LINK,
        str(shared / ".node-agent/worker/flamenco-worker.yaml"): ActionKind.WRITE_FILE,
    }
    assert any("no worker credentials yet" in n for n in plan.notes)
    bootstrap.apply(plan)
    blender = node.package_dir("blender") / "blender"
    assert os.readlink(shared / "blender") == str(blender)
    assert os.readlink(shared / "ffprobe") == str(node.package_dir("ffmpeg") / "ffprobe")
    # Only the link lands in the shared dir: Blender's data stays beside its binary.
    assert (blender.parent / "4.2" / "datafiles").is_dir()
    assert not (shared / "4.2").exists()
    config = yaml.safe_load((shared / ".node-agent/worker/flamenco-worker.yaml").read_text())
    assert config["manager_url"] == "http://127.0.0.1:8080/"
    assert config["worker_name"] == "spot-render-v3-0f6a1c2e9d8b"
    assert (shared / ".node-agent/worker/home").stat().st_mode & 0o777 == 0o700


def test_second_run_changes_nothing(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    _run(node)
    plan = _plan(node)
    assert plan.changes == ()
    assert bootstrap.apply(plan) == []


def test_changed_setting_rewrites_only_the_config(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    _run(node)
    changes = _plan(node, FLAMENCO_TASK_TYPES="blender").changes
    assert [(a.kind, Path(a.path).name) for a in changes] == [
        (ActionKind.WRITE_FILE, "flamenco-worker.yaml")
    ]


def _redeploy(node: TestNode, fixture_root: Path) -> TestNode:
    """The pool got new package versions: new folders, new variables."""
    environ = dict(node.environ)
    for name, value in node.environ.items():
        if name.startswith("AZ_BATCH_APP_PACKAGE_"):
            environ[name] = value.replace("2024-09-30", "2024-11-02")
    for package in node.env.packages:
        os.rename(package.path, package.path.replace("2024-09-30", "2024-11-02"))
    return TestNode(fixture_root, environ)


def test_redeploy_links_follow_the_new_folders(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    _run(node)
    node = _redeploy(node, ROOT)
    plan = _plan(node)
    links = [a for a in plan.changes if a.kind is ActionKind.LINK]
    assert len(links) == 3
    assert all("replaces a link to" in a.reason for a in links)
    bootstrap.apply(plan)
    assert "2024-11-02" in os.readlink(node.shared / "blender")
    assert os.path.isfile(node.shared / "blender")


def test_nested_folder_zip_is_used_with_a_warning(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot", nested=("blender",))
    plan = _plan(node)
    [warning] = [n for n in plan.notes if "blender-4.2.3-linux-x64" in n]
    assert warning.startswith("WARNING: blender:")
    assert "rebuild the zip from inside that folder" in warning
    bootstrap.apply(plan)
    assert os.readlink(node.shared / "blender").endswith("blender-4.2.3-linux-x64/blender")


def test_bundled_libraries_without_ldd_are_not_used(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")  # the fake file system has no ldd
    (node.package_dir("blender") / "_system_libs").mkdir()
    plan = _plan(node)
    assert (
        "WARNING: blender: its package brings libraries, but there is no ldd to ask which "
        "ones this node lacks; they are not used"
    ) in plan.notes
    assert _kinds(plan)[str(node.shared / "blender")] is ActionKind.LINK


def test_missing_default_tool_is_a_note(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    os.unlink(node.package_dir("ffmpeg") / "ffprobe")
    plan = _plan(node)
    assert any(n.startswith("ffprobe: no 'ffprobe' executable") for n in plan.notes)
    assert str(node.shared / "ffprobe") not in _kinds(plan)


def test_missing_explicit_tool_is_an_error(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    os.unlink(node.package_dir("ffmpeg") / "ffprobe")
    problems = _problems(node, NODE_AGENT_TOOLS="blender ffprobe oidn")
    assert len(problems) == 2
    assert problems[0].startswith("ffprobe: no 'ffprobe' executable at the top of package")
    assert problems[1].startswith("package oidn: no 'oidn' application package")


def test_missing_package_folder_names_the_variable(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    worker = node.package_dir("flamenco-worker")
    for child in worker.iterdir():
        child.unlink()
    worker.rmdir()
    [problem] = _problems(node)
    assert problem.startswith(
        f"AZ_BATCH_APP_PACKAGE_flamenco_worker: package folder {worker} does not exist"
    )


def test_non_executable_binary_of_ours_is_fixed(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot", mode=0o644)
    plan = _plan(node)
    fixes = [a for a in plan.changes if a.kind is ActionKind.MAKE_EXECUTABLE]
    assert len(fixes) == 4  # the worker, blender, ffmpeg, ffprobe
    bootstrap.apply(plan)
    assert is_executable_mode(node.package_dir("blender") / "blender")
    assert (node.package_dir("blender") / "blender").stat().st_mode & 0o777 == 0o755


def test_non_executable_binary_of_someone_else_is_an_error(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    blender = node.package_dir("blender") / "blender"
    os.chmod(blender, 0o644)
    os.chown(blender, 4242, 4242)
    [problem] = _problems(node)
    assert problem.startswith(f"{blender}: is not executable and belongs to another user")


@pytest.mark.parametrize("what", ["file", "directory", "foreign symlink"])
def test_foreign_entry_at_the_link_path_is_never_replaced(
    fakefs: FakeFilesystem, what: str
) -> None:
    node = make_node(ROOT, "newer_spot")
    link = node.shared / "blender"
    if what == "file":
        link.write_text("an admin's own blender wrapper")
    elif what == "directory":
        link.mkdir()
    else:
        os.symlink("/usr/bin/blender", link)
    [problem] = _problems(node)
    assert problem.startswith(f"{link}: is a ")
    assert "that node-agent did not make; it will not replace it" in problem
    assert os.path.lexists(link)


def test_symlink_planted_at_the_config_path_is_not_followed(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    _run(node)
    config = node.shared / ".node-agent/worker/flamenco-worker.yaml"
    victim = Path("/etc/important.conf")
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("precious\n")
    config.unlink()
    os.symlink(victim, config)
    plan = _plan(node)
    assert any("was a symlink to /etc/important.conf" in n for n in plan.notes)
    bootstrap.apply(plan)
    assert victim.read_text() == "precious\n"
    assert not config.is_symlink()
    assert yaml.safe_load(config.read_text())["worker_name"].startswith("spot-render-v3")


def test_disk_full_during_config_write_keeps_the_old_config(fakefs: FakeFilesystem) -> None:
    fakefs.set_disk_usage(10**9)  # pyfakefs counts usage only from here on
    node = make_node(ROOT, "newer_spot")
    _run(node)
    config = node.shared / ".node-agent/worker/flamenco-worker.yaml"
    before = config.read_bytes()
    fakefs.set_disk_usage(fakefs.get_disk_usage().used + 64)
    with pytest.raises(RuntimeFailure, match="disk is full") as caught:
        _run(node, FLAMENCO_TASK_TYPES="blender ffmpeg file-management misc extra-type")
    assert str(config) in str(caught.value)
    assert config.read_bytes() == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["flamenco-worker.yaml", "home"]


def _become_task_user(root: Path) -> None:
    """Hand the node's files to uid 1000 and act as that (non-root) user from now on."""
    for path in [root, *root.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)
    helpers.set_uid(1000)
    helpers.set_gid(1000)


def test_a_shared_dir_it_cannot_write_is_a_node_fault_not_bad_input(
    fakefs: FakeFilesystem,
) -> None:
    node = make_node(ROOT, "newer_spot")
    _become_task_user(ROOT)
    os.chmod(node.shared, 0o555)
    plan = _plan(node)  # the input is fine: the plan can be shown
    why = f"the shared dir {node.shared}: not writable by uid 1000 (owner uid 1000, mode 555)"
    assert plan.blocked is not None and plan.blocked.startswith(why)
    with pytest.raises(RuntimeFailure, match=re.escape(why)):
        bootstrap.apply(plan)


def test_read_only_worker_dir_fails_cleanly_at_apply(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    _run(node)
    _become_task_user(ROOT)
    os.chmod(node.shared / ".node-agent/worker", 0o555)
    with pytest.raises(RuntimeFailure, match="permission denied for uid 1000"):
        _run(node, FLAMENCO_WORKER_NAME="renamed")


def _write_credentials(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


def test_v3_credentials_are_never_touched(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    _run(node)
    credentials = node.shared / ".node-agent/worker/home/flamenco-worker-credentials.yaml"
    _write_credentials(credentials, "worker_id: abc\nworker_secret: xyz\n")
    plan = _plan(node, FLAMENCO_WORKER_NAME="renamed")
    assert _kinds(plan)[str(credentials)] is ActionKind.KEEP
    bootstrap.apply(plan)
    assert credentials.read_text() == "worker_id: abc\nworker_secret: xyz\n"


def test_v2_node_config_and_credentials_are_carried_over(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "seed")
    plan = _plan(node, FLAMENCO_REGISTRATION_SECRET="reg-secret")
    assert plan.flavour.flavour.value == "v2"
    bootstrap.apply(plan)
    worker_dir = node.shared / ".node-agent/worker"
    config = worker_dir / "flamenco-worker.cfg"
    assert config.stat().st_mode & 0o777 == 0o600
    # The worker registered (v2 writes its credentials to $HOME) and an operator also
    # put an id into the node's config by hand: both survive the next start.
    home_config = worker_dir / "home/.flamenco-worker.cfg"
    _write_credentials(home_config, "[flamenco-worker]\nworker_id = 1\nworker_secret = 2\n")
    config.write_text(
        config.read_text().replace(
            "[flamenco-worker]\n", "[flamenco-worker]\nworker_id = old-id\nworker_secret = old%%s\n"
        )
    )
    plan = _plan(node, FLAMENCO_REGISTRATION_SECRET="reg-secret", FLAMENCO_TASK_TYPES="sleep")
    assert _kinds(plan)[str(home_config)] is ActionKind.KEEP
    bootstrap.apply(plan)
    text = config.read_text()
    assert "worker_id = old-id\n" in text and "worker_secret = old%%s\n" in text
    assert "task_types = sleep\n" in text
    assert home_config.read_text().endswith("worker_secret = 2\n")


def test_unparseable_v2_config_is_not_overwritten(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "seed")
    _run(node)
    config = node.shared / ".node-agent/worker/flamenco-worker.cfg"
    config.write_text("worker_id = hand-edited-without-section\n")
    [problem] = _problems(node)
    assert problem.startswith(f"{config}: cannot be parsed")
    assert "will not overwrite it" in problem


def test_missing_worker_package_is_an_error(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "job_task")
    problems = _problems(node)
    assert problems[0].startswith("package flamenco-worker: no 'flamenco-worker' application")


def test_errno_hints(fakefs: FakeFilesystem) -> None:
    action = bootstrap.Action(ActionKind.WRITE_FILE, "/x", "new")
    failure: Optional[RuntimeFailure] = actions._failure(action, OSError(errno.EROFS, "ro"))
    assert failure is not None and str(failure) == "write /x failed: the file system is read-only"


def test_v3_refuses_the_workers_own_exit_codes(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    for code in ("1", "2", "254"):
        problems = _problems(node, FLAMENCO_RESTART_EXIT_CODE=code, NODE_AGENT_TOOLS="blender nuke")
        # Every problem at once: the bad code and the missing tool.
        assert len(problems) == 2
        assert f"restart_exit_code={code} (from environment FLAMENCO_RESTART_EXIT_CODE)" in (
            problems[0] + problems[1]
        )
        assert "failure would look like a restart request" in problems[0] + problems[1]
    # A v2 worker has no restart exit code of its own: any code will do.
    assert _plan(make_node(ROOT / "v2", "seed"), FLAMENCO_RESTART_EXIT_CODE="1")


def test_a_bundled_ffmpeg_is_what_the_worker_runs(fakefs: FakeFilesystem) -> None:
    node = make_node(ROOT, "newer_spot")
    bundled = node.package_dir("flamenco-worker") / "tools" / "ffmpeg"
    bundled.parent.mkdir()
    bundled.write_text("#!/bin/sh\n")
    bundled.chmod(0o644)
    plan = _plan(node)
    [note] = [n for n in plan.notes if "ffmpeg tasks run" in n]
    assert note.startswith(f"WARNING: ffmpeg tasks run {bundled}")
    assert "not the ffmpeg package" in note
    assert _kinds(plan)[str(bundled)] is ActionKind.MAKE_EXECUTABLE
    bootstrap.apply(plan)
    assert is_executable_mode(bundled)
    # Without an ffmpeg package on the node, the bundled one is simply the one.
    plan = _plan(node, NODE_AGENT_TOOLS="blender")
    [note] = [n for n in plan.notes if "ffmpeg tasks run" in n]
    assert not note.startswith("WARNING")
