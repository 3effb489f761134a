"""The real ``node-agent bootstrap`` on a node laid out in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from node_agent.common.errors import EXIT_INVALID, EXIT_OK
from node_agent.node.layout import WORKER_EXECUTABLE
from tests.nodes import make_node


def _bootstrap(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent", "bootstrap", "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )


def test_bootstrap_then_tools_resolve_through_path(tmp_path: Path) -> None:
    node = make_node(tmp_path / "batch" / "tasks", "seed")
    env_file = node.env_file(tmp_path / "node.env")

    dry = _bootstrap(env_file, "--dry-run")
    assert dry.returncode == EXIT_OK, dry.stderr
    assert "dry run: 7 change(s) planned, none made" in dry.stdout
    assert not (node.shared / "blender").exists()

    first = _bootstrap(env_file)
    assert first.returncode == EXIT_OK, first.stderr
    assert first.stdout.startswith(
        "worker: v2 (flamenco-worker package version 2.2.1), "
        "name 'je-moeder-47-tvm-383584635_1-20190115t092314z'"
    )
    assert "changed 7:" in first.stdout

    # A task on the node gets PATH from Batch, the shared dir on it (the fixture's PATH,
    # rebased), and finds the tools by name.
    task_path = node.environ["PATH"] + os.pathsep + os.environ["PATH"]
    for tool, first_line in (
        ("blender", "Blender 4.2.3"),
        ("ffmpeg", "ffmpeg version"),
        ("ffprobe", "ffprobe version"),
    ):
        found = shutil.which(tool, path=task_path)
        assert found == str(node.shared / tool)
        flag = "--version" if tool == "blender" else "-version"
        output = subprocess.run(
            [tool, flag],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": task_path},
            timeout=30,
        ).stdout
        assert output.startswith(first_line)
    assert Path(os.path.realpath(node.shared / "blender")).parent == node.package_dir("blender")

    second = _bootstrap(env_file)
    assert second.returncode == EXIT_OK
    assert second.stdout.rstrip().endswith("nothing to change: the node is already set up")


def test_bootstrap_reports_environment_and_settings_problems_together(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "seed", manager_url=None)
    environ = dict(
        node.environ,
        AZ_BATCH_NODE_IS_DEDICATED="maybe",  # only a warning
        AZ_BATCH_NODE_SHARED_DIR="shared",
        FLAMENCO_WORKER_FLAVOUR="v9",
        FLAMENCO_REGISTRATION_SECRET="",
    )
    env_file = tmp_path / "bad.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in environ.items()))
    result = _bootstrap(env_file)
    assert result.returncode == EXIT_INVALID
    assert "Traceback" not in result.stderr
    assert "invalid environment, settings or plan (4 problem(s))" in result.stderr
    for fragment in (
        "AZ_BATCH_NODE_SHARED_DIR='shared': expected an absolute path",
        "flavour='v9'",
        "registration_secret=<redacted>",
        "manager_url: is not set",
    ):
        assert fragment in result.stderr
    assert "WARNING" not in result.stderr  # warnings only once the node can be set up
    assert not (node.shared / ".node-agent").exists()


def test_settings_and_plan_problems_are_listed_together(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "seed")
    (node.package_dir("flamenco-worker") / WORKER_EXECUTABLE).unlink()
    env_file = node.env_file(tmp_path / "node.env")
    bad = ("--stop-grace", "-1", "--restart-exit-code", "0")
    for command in (["bootstrap", "--dry-run"], ["run"]):
        result = subprocess.run(
            [sys.executable, "-m", "node_agent", *command, "--env-file", str(env_file), *bad],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ["PATH"]},
        )
        assert result.returncode == EXIT_INVALID, result.stderr
        assert "Traceback" not in result.stderr
        # The two settings, and the plan's own problem, made with their defaults.
        assert "(3 problem(s))" in result.stderr, result.stderr
        assert "stop_grace='-1' (from command line --stop-grace)" in result.stderr
        assert "restart_exit_code='0' (from command line --restart-exit-code)" in result.stderr
        assert f"{WORKER_EXECUTABLE}: no {WORKER_EXECUTABLE!r} executable" in result.stderr
        assert not (node.shared / ".node-agent").exists()


def test_bootstrap_refuses_a_foreign_file_and_writes_nothing(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "newer_spot")
    (node.shared / "ffmpeg").write_text("someone's wrapper")
    result = _bootstrap(node.env_file(tmp_path / "node.env"))
    assert result.returncode == EXIT_INVALID
    assert f"{node.shared / 'ffmpeg'}: is a file that node-agent did not make" in result.stderr
    assert not (node.shared / ".node-agent").exists()
    assert not (node.shared / "blender").exists()


def test_bootstrap_refuses_a_restart_code_of_the_v3_workers_own(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "newer_spot")
    node.environ["FLAMENCO_RESTART_EXIT_CODE"] = "254"
    result = _bootstrap(node.env_file(tmp_path / "node.env"))
    assert result.returncode == EXIT_INVALID and "Traceback" not in result.stderr
    assert "restart_exit_code=254 (from environment FLAMENCO_RESTART_EXIT_CODE)" in result.stderr
    assert "254 when its shutdown is forced" in result.stderr
    assert not (node.shared / ".node-agent").exists()


def test_a_setting_that_would_add_a_line_to_the_config_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path / "root", "seed")  # a v2 worker: an INI config file
    env_file = node.env_file(tmp_path / "node.env")
    config = tmp_path / "node-agent.yaml"
    config.write_text("registration_secret: [TopSecretValue1, 'worker_id = injected']\n")
    for environ in (
        {"FLAMENCO_REGISTRATION_SECRET": "TopSecretValue1\nworker_id = injected"},
        {"NODE_AGENT_CONFIG": str(config)},
    ):
        for _ in range(2):  # the node stays as it was: a second run says the same
            result = subprocess.run(
                [sys.executable, "-m", "node_agent", "bootstrap", "--env-file", str(env_file)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={"PATH": os.environ["PATH"], **environ},
            )
            assert result.returncode == EXIT_INVALID, result.stderr
            assert "registration_secret" in result.stderr and "Traceback" not in result.stderr
            assert "TopSecretValue1" not in result.stdout + result.stderr
            assert not (node.shared / ".node-agent").exists()
