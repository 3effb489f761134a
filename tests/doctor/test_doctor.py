"""``node-agent doctor`` on node layouts built on disk: a healthy node and many
broken ones, each naming the right check as failed with its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

from node_agent import bootstrap, doctor
from node_agent.bootstrap.survey import survey
from node_agent.common.errors import EXIT_OK, EXIT_UNHEALTHY
from node_agent.config.settings import load_settings
from node_agent.doctor import Context, Row, Status, node_checks, service_checks, tool_checks
from node_agent.runtime.state import AgentState, write_state
from node_agent.sim.standins.imds import FakeImds
from node_agent.sim.standins.manager import FakeManager
from node_agent.sim.standins.server import Response, StandinServer
from tests.nodes import CLOSED_LOOPBACK, TestNode, make_node, write_executable

SECRETS = {
    "AZ_BATCH_AUTHENTICATION_TOKEN": "tok-3f9a-never-print-me",
    "FLAMENCO_REGISTRATION_SECRET": "reg-8c1d-never-print-me",
    "STORAGE_ACCOUNT_KEY": "key-77e2-never-print-me",
}
WORKER_SECRET = "wsec-41b0-never-print-me"


@pytest.fixture
def healthy(tmp_path: Path, services: tuple[FakeManager, FakeImds]) -> TestNode:
    """A bootstrapped node with credentials, secrets planted in every place."""
    manager, imds = services
    node = make_node(tmp_path / "root", "newer_spot", manager_url=manager.url)
    node.environ.update(SECRETS, NODE_AGENT_IMDS_URL=imds.url)
    settings = load_settings(node.environ, {}, None)
    bootstrap.apply(bootstrap.plan(node.env, settings, survey(node.env, settings)))
    credentials = node.shared / ".node-agent/worker/home/flamenco-worker-credentials.yaml"
    credentials.write_text(f"worker_id: w-1\nworker_secret: {WORKER_SECRET}\n")
    return node


def _rows(node: TestNode) -> dict[str, Row]:
    return {row.check: row for row in doctor.run_checks(node.environ)}


def _failed(node: TestNode) -> dict[str, Row]:
    return {k: r for k, r in _rows(node).items() if r.status is Status.FAILED}


def test_healthy_node(healthy: TestNode) -> None:
    rows = doctor.run_checks(healthy.environ)
    assert doctor.healthy(rows)
    by_check = {r.check: r for r in rows}
    assert by_check["blender --version"].found == "Blender 4.2.3 (stand-in)"
    assert by_check["manager"].found.startswith("Flamenco Manager 3.9-standin in ")
    assert by_check["metadata service"].found == (
        "VM vm-under-test, Standard_D4s_v5, Spot priority"
    )
    assert by_check["credentials"].found.endswith("(not shown)")
    assert by_check["package blender"].found.startswith("version 4.2.3 at ")
    assert by_check["gpus"].status is Status.SKIPPED
    assert by_check["agent"].status is Status.WARNING  # never ran: a warning, not a failure
    assert all(r.status in (Status.OK, Status.SKIPPED, Status.WARNING) for r in rows)


def _break_package(node: TestNode) -> None:
    for name in [n for n in node.environ if n.startswith("AZ_BATCH_APP_PACKAGE_ffmpeg")]:
        del node.environ[name]


def _nested(node: TestNode) -> None:
    folder = node.package_dir("blender")
    inner = folder / "blender-4.2.3-linux-x64"
    inner.mkdir()
    for child in list(folder.iterdir()):
        if child != inner:
            child.rename(inner / child.name)


def _crashing_blender(node: TestNode) -> None:
    write_executable(
        node.package_dir("blender") / "blender",
        (
            "#!/bin/sh\necho 'blender: error while loading shared libraries: libXi.so.6: "
            "cannot open shared object file: No such file or directory' >&2\nexit 127\n"
        ),
    )


def _hanging_ffprobe(node: TestNode) -> None:
    write_executable(node.package_dir("ffmpeg") / "ffprobe", "#!/bin/sh\nexec sleep 60\n")


def _path_without_shared(node: TestNode) -> None:
    shared = str(node.shared)
    node.environ["PATH"] = ":".join(p for p in node.environ["PATH"].split(":") if p != shared)


def _unparseable_config(node: TestNode) -> None:
    (node.shared / ".node-agent/worker/flamenco-worker.yaml").write_text("manager_url: [\n")


def _crash_loop(node: TestNode) -> None:
    write_state(
        str(node.shared / ".node-agent/state.json"),
        AgentState(
            agent_pid=os.getpid(),
            agent_create_time=0.0,
            phase="backing-off",
            started_at=0.0,
            flavour="v3",
            worker_name="w",
            worker_executable="/x",
            worker_dir="/w",
            config_path="/c",
            restarts=9,
            consecutive_failures=9,
            crash_loop=True,
            last_exit_code=1,
            last_exit_reason="exit code 1",
        ),
    )


def _bundled_ffmpeg(node: TestNode, mode: int) -> Path:
    """An ffmpeg in the worker package's tools/, which the v3 worker runs first."""
    tools = node.package_dir("flamenco-worker") / "tools"
    tools.mkdir()
    write_executable(tools / "ffmpeg", "#!/bin/sh\necho 'ffmpeg version 6.1 (bundled)'\n", mode)
    return tools / "ffmpeg"


def test_the_ffmpeg_checked_is_the_one_the_worker_runs(healthy: TestNode) -> None:
    bundled = _bundled_ffmpeg(healthy, 0o755)
    row = _rows(healthy)["ffmpeg -version"]
    assert row.status is Status.WARNING  # the ffmpeg package is not what runs
    assert row.found.startswith(f"{bundled} (bundled with the worker, run before PATH)")
    assert row.found.endswith("ffmpeg version 6.1 (bundled)")
    assert row.fix is not None and "packaging/build" in row.fix


def _failing_gpu_driver(node: TestNode) -> None:
    tools = node.root / "gpu-tools"
    tools.mkdir()
    write_executable(
        tools / "nvidia-smi",
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because "
        "it could not communicate with the NVIDIA driver.'\nexit 9\n",
    )
    node.environ["PATH"] += f":{tools}"


BROKEN: list[tuple[str, Callable[[TestNode], None], str, str, str]] = [
    # (case, how to break the node, the failed check, in what it found, in its fix)
    (
        "package missing",
        _break_package,
        "package ffmpeg",
        "not on this node",
        "applicationPackageReferences",
    ),
    (
        "nested zip",
        _nested,
        "executable blender",
        "everything inside 'blender-4.2.3-linux-x64'",
        "rebuild the zip from inside blender-4.2.3-linux-x64",
    ),
    (
        "non-executable binary",
        lambda n: (n.package_dir("ffmpeg") / "ffmpeg").chmod(0o644),
        "executable ffmpeg",
        "is not executable",
        "executable bit",
    ),
    ("blender crashes", _crashing_blender, "blender --version", "libXi.so.6", "libxi6"),
    (
        "tool hangs",
        _hanging_ffprobe,
        "ffprobe -version",
        "did not answer within 1 s",
        "run it by hand",
    ),
    (
        "shared dir not on PATH",
        _path_without_shared,
        "PATH",
        "lacks the shared dir",
        "do not replace PATH",
    ),
    (
        "manager down",
        lambda n: n.environ.update(FLAMENCO_MANAGER_URL=CLOSED_LOOPBACK),
        "manager",
        "connection refused",
        "FLAMENCO_MANAGER_URL",
    ),
    ("config unparseable", _unparseable_config, "worker config", "cannot be parsed", "delete it"),
    (
        "environment broken",
        lambda n: n.environ.pop("AZ_BATCH_NODE_ROOT_DIR"),
        "environment",
        "AZ_BATCH_NODE_ROOT_DIR: is not set",
        "fix each variable",
    ),
    (
        "settings broken",
        lambda n: n.environ.update(FLAMENCO_TASK_TYPES=" "),
        "settings",
        "task_types",
        "correct the named settings",
    ),
    ("crash loop", _crash_loop, "agent", "CRASH LOOP", "stdout.txt/stderr.txt"),
    ("gpu driver broken", _failing_gpu_driver, "gpus", "NVIDIA driver", "NVIDIA driver"),
    (
        "bundled ffmpeg not executable",
        lambda n: _bundled_ffmpeg(n, 0o644),
        "ffmpeg -version",
        "is not executable: every ffmpeg task fails",
        "packaging/build",
    ),
]


@pytest.mark.parametrize("case, breaks, check, found, fix", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_node(
    healthy: TestNode,
    monkeypatch: pytest.MonkeyPatch,
    *,
    case: str,
    breaks: Callable[[TestNode], None],
    check: str,
    found: str,
    fix: str,
) -> None:
    monkeypatch.setattr(tool_checks, "TOOL_TIMEOUT", 1.0)
    breaks(healthy)
    rows = doctor.run_checks(healthy.environ)
    failed = {r.check: r for r in rows if r.status is Status.FAILED}
    assert check in failed, (case, [(r.check, r.status, r.found) for r in rows])
    assert found in failed[check].found
    assert failed[check].fix and fix in failed[check].fix
    assert not doctor.healthy(rows)


def _free_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    usage = type("usage", (), {"free": free, "total": 2**40, "used": 0})
    monkeypatch.setattr(node_checks.shutil, "disk_usage", lambda path: usage)


def test_disk_almost_full(healthy: TestNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the disk: 200 MiB free against Batch's DiskFull threshold of 1 GB.
    _free_disk(monkeypatch, 200 * 2**20)
    failed = _failed(healthy)
    assert failed["disk"].found.startswith("200.0 MiB free on ")
    assert "DiskFull below 953.7 MiB" in failed["disk"].found
    assert "free space" in (failed["disk"].fix or "")


def test_disk_check_reads_only_the_documented_threshold(
    healthy: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy.environ.update(
        AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES=str(2 * 2**30),
        # Invented names an earlier note had; no node sets them, and they count for nothing.
        AZ_BATCH_RESERVED_EPHEMERAL_DISK_SPACE_BYTES=str(2**45),
        AZ_BATCH_OS_RESERVED_EPHEMERAL_DISK_SPACE_BYTES=str(2**45),
    )
    ctx = Context.from_environ(healthy.environ)
    _free_disk(monkeypatch, 5 * 2**30)
    assert node_checks.check_resources(ctx)[0].status is Status.OK
    _free_disk(monkeypatch, 3 * 2**30)
    [disk, _] = node_checks.check_resources(ctx)
    assert disk.status is Status.WARNING  # below twice the threshold
    assert "(DiskFull below 2.0 GiB)" in disk.found


def test_a_check_past_its_limit_is_failed_not_waited_for(
    healthy: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hanging_ffprobe(healthy)
    monkeypatch.setattr(tool_checks, "TOOL_TIMEOUT", 30.0)
    rows = {r.check: r for r in doctor.run_checks(healthy.environ, limit=1.0)}
    assert rows["tools"].status is Status.FAILED and "no result within 1 s" in rows["tools"].found
    assert rows["environment"].status is Status.OK


def _run_doctor(node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    env_file = node.env_file(node.root.parent / "node.env")
    return subprocess.run(
        [sys.executable, "-m", "node_agent", "doctor", "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )


def test_the_command_and_its_exit_codes(healthy: TestNode) -> None:
    good = _run_doctor(healthy, "--json")
    assert good.returncode == EXIT_OK, good.stdout
    document = json.loads(good.stdout)
    assert document["schema"] == 1 and document["healthy"] is True
    assert set(document["checks"][0]) == {"check", "status", "found", "fix"}
    _unparseable_config(healthy)
    bad = _run_doctor(healthy)
    assert bad.returncode == EXIT_UNHEALTHY
    assert "FAILED   worker config" in bad.stdout and "fix: delete it" in bad.stdout


@pytest.mark.parametrize("as_json", [False, True])
def test_no_secret_ever_appears(healthy: TestNode, as_json: bool) -> None:
    _unparseable_config(healthy)  # a failing row quotes the file: still no secret
    (healthy.shared / ".node-agent/worker/flamenco-worker.yaml").write_text(
        f"worker_secret: {WORKER_SECRET}\nmanager_url: [\n"
    )
    result = _run_doctor(healthy, *(["--json"] if as_json else []))
    output = result.stdout + result.stderr
    for secret in (*SECRETS.values(), WORKER_SECRET):
        assert secret not in output


# ---- the service rows reach the services as the agent does ----------------------


def test_the_manager_row_goes_through_the_workers_proxy(tmp_path: Path) -> None:
    # The Manager's address is unreachable; the "proxy" is a local server that answers.
    proxy = StandinServer(lambda request: Response(200, {"version": "via-proxy"})).start()
    try:
        node = make_node(tmp_path / "root", "newer_spot", manager_url="http://manager.invalid/")
        node.environ["HTTP_PROXY"] = proxy.url
        [row] = service_checks.check_manager(Context.from_environ(node.environ))
    finally:
        proxy.stop()
    assert row.status is Status.OK and row.found.startswith("Flamenco Manager via-proxy in ")
    assert [r.path for r in proxy.requests] == ["http://manager.invalid/api/v3/version"]


@pytest.mark.parametrize(
    "answer, status, found",
    [
        (Response(200, {"compute": {"name": "vm-1", "vmSize": "D4"}}), Status.OK, "VM vm-1, D4"),
        (Response(200, [1, 2]), Status.WARNING, "answered, but not with an instance document"),
        (Response(200, {"compute": "x"}), Status.WARNING, "not with an instance document"),
        (Response(404, b"<html>"), Status.WARNING, "not with an instance document (HTTP 404)"),
        (None, Status.SKIPPED, "not on Azure"),
    ],
)
def test_the_metadata_row_asks_as_the_watcher_does(
    answer: Optional[Response], status: Status, found: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that refuses everything: the Metadata Service is never asked through one.
    monkeypatch.setenv("HTTP_PROXY", CLOSED_LOOPBACK)
    monkeypatch.setenv("http_proxy", CLOSED_LOOPBACK)
    server = StandinServer(lambda request: answer).start()
    url = server.url if answer is not None else CLOSED_LOOPBACK
    try:
        ctx = Context({"NODE_AGENT_IMDS_URL": url}, None, (), None, ())
        [row] = service_checks.check_metadata(ctx)
    finally:
        server.stop()
    assert row.status is status and found in row.found, row
    if answer is not None:
        [request] = server.requests
        assert request.path == "/metadata/instance?api-version=2021-02-01"
        assert request.headers.get("Metadata") == "true"
