"""A simulated Batch node (packaging/simulate-node) running the real start task
from the built package: end to end, as a pool for fleet, and its own input,
signals and clean-up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest
import yaml

from node_agent.cli import main
from node_agent.node.envfile import load_env_file
from node_agent.sim.node import SimulatedNode, tool_packages
from node_agent.sim.pool import SimulatedPool
from node_agent.sim.standins.imds import EVENTS_PATH, FakeImds
from node_agent.sim.standins.manager import FakeManager
from tests.helpers import AZ_ENV, wait_until
from tests.packages import REPO

POOL = REPO / "packaging" / "pool.json"
NODE_NAME = "spot-render-v3-0f6a1c2e9d8b"


def _tree_of(root: Path) -> list[psutil.Process]:
    """Every process whose command line or working dir lies in the node's root."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        info = process.info
        text = " ".join(info["cmdline"] or []) + " " + (info["cwd"] or "")
        if str(root) in text:
            found.append(process)
    return found


def test_simulated_node_end_to_end(
    package: Path, tmp_path: Path, services: tuple[FakeManager, FakeImds]
) -> None:
    manager, imds = services
    root = tmp_path / "batch" / "tasks"
    fixture = load_env_file(str(AZ_ENV / "newer_spot.env"))
    packages = {"flamenco-worker": package, **tool_packages(tmp_path)}
    # Built by packaging/build-tool from release archives: top folders gone, links
    # (to a file, to a folder) materialised.
    with zipfile.ZipFile(packages["blender"]) as blender:
        assert blender.namelist() == ["4.2/datafiles/README", "blender", "readme.txt"]
    with zipfile.ZipFile(packages["ffmpeg"]) as ffmpeg:
        assert ffmpeg.namelist() == ["ffmpeg", "ffprobe", "model/README", "models/README"]
    node = SimulatedNode(
        root,
        fixture,
        packages,
        POOL,
        # The Manager asks for a restart right after a start below: honoured at once,
        # as it is for a worker that has run for min_uptime.
        {
            "FLAMENCO_MANAGER_URL": manager.url,
            "NODE_AGENT_IMDS_URL": imds.url,
            "FLAMENCO_STANDIN_TIME_SCALE": "0.05",  # the stand-in worker's own waits
            "NODE_AGENT_MIN_UPTIME": "0.001",
        },
    )
    node.lay_out()
    stdout, stderr = node.startup / "stdout.txt", node.startup / "stderr.txt"
    render = manager.add_task("render", "blender", [{"name": "blender-render", "parameters": {}}])
    encode = manager.add_task("encode", "ffmpeg", [{"name": "frames-to-video", "parameters": {}}])

    # First boot: the worker registers with the node's name, is awake and works.
    node.start()
    wait_until(lambda: manager.task_status(encode) == "completed", 60)
    assert manager.task_status(render) == "completed"
    assert manager.registered_names() == [NODE_NAME]
    [worker] = manager.named(NODE_NAME)
    assert worker.status == "awake"
    shared = root / "shared"
    path = node.environ["PATH"]
    for tool in ("blender", "ffmpeg", "ffprobe"):
        assert shutil.which(tool, path=path) == str(shared / tool)
    out = stdout.read_text()
    assert f"path={shared}/blender version=Blender 4.2.3 (stand-in)" in out
    assert "starting Flamenco Worker (STAND-IN)" in out and "node-agent:" not in out
    assert "\x1b" not in out  # NO_COLOR: no colour escapes in stdout.txt
    # The doctor's report, once at start-up, is in stderr.txt for whoever reads it. It
    # runs beside the worker at a lower priority: on a loaded machine the worker may
    # finish both tasks before it is written, so wait for it.
    report = "node-agent: INFO: health report (node-agent doctor): "
    wait_until(lambda: report in stderr.read_text(), 60, "the start-up health report")
    err = stderr.read_text()
    assert "node-agent: INFO: worker started" in err and "STAND-IN" not in err
    assert report + "all checks passed" in err
    assert "node-agent: INFO:   OK       blender --version           Blender 4.2.3" in err
    # The pool's shared storage, mounted where the pool says (where a mount namespace
    # can be had), checked before the start.
    share = root / "fsmounts" / "flamenco"
    if node.storage_note.startswith("NOT simulated"):
        assert "SKIPPED  storage                     no shared storage configured" in err
    else:
        assert f"OK       storage flamenco            {share} (" in err
        assert f"shared storage ready: {share} (" in err
    config = yaml.safe_load((shared / ".node-agent/worker/flamenco-worker.yaml").read_text())
    assert config == {
        "manager_url": manager.url,
        "task_types": ["blender", "ffmpeg", "file-management", "misc"],
        "restart_exit_code": 75,
        "worker_name": NODE_NAME,
        "oom_score_adjust": 500,
    }
    credentials = yaml.safe_load(
        (shared / ".node-agent/worker/home/flamenco-worker-credentials.yaml").read_text()
    )

    # The node is stopped (deleted, or rebooting): nothing is left behind.
    assert node.stop() == 0
    assert _tree_of(root) == []
    assert len(manager.server.received("POST", "/api/v3/worker/sign-off")) == 1

    # Reboot: the start task runs again and the worker re-uses its credentials.
    node.start()
    accepted = "manager accepted sign-on startup_state=awake"
    wait_until(lambda: stdout.read_text().count(accepted) == 2, 60)
    assert manager.registered_names() == [NODE_NAME]

    # The Manager asks for a restart: the worker signs off, exits with the restart
    # code, and the agent starts it again at once.
    manager.ask("restart")
    wait_until(lambda: stdout.read_text().count(accepted) == 3, 60)
    assert "the worker asked to be restarted; restart now" in stderr.read_text()
    assert len(manager.server.received("POST", "/api/v3/worker/sign-off")) == 2

    # Spot preemption: the worker signs off, the Manager drops it, the event is
    # acknowledged; the start task waits for the platform, which takes the node.
    imds.schedule("Preempt", "EVICT-1")
    wait_until(lambda: imds.acknowledged() == ["EVICT-1"], 60)
    assert len(manager.server.received("POST", "/api/v3/worker/sign-off")) == 3
    assert manager.worker(credentials["worker_id"]).deleted
    assert node.process is not None and node.process.poll() is None
    assert node.stop() == 0
    assert _tree_of(root) == []

    # No secret in what an operator reads.
    everything = stdout.read_text() + stderr.read_text()
    for secret in (credentials["worker_secret"], fixture["AZ_BATCH_AUTHENTICATION_TOKEN"]):
        assert secret not in everything
    assert imds.server.received("GET", EVENTS_PATH)


def test_simulated_pool_for_fleet(
    package: Path,
    tmp_path: Path,
    services: tuple[FakeManager, FakeImds],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """packaging/simulate-node --nodes N: nodes of one pool running the real start
    task, and a Batch service that node-agent fleet reads their state files from."""
    manager, imds = services
    pool = SimulatedPool(
        tmp_path,
        load_env_file(str(AZ_ENV / "newer_spot.env")),
        {"flamenco-worker": package, **tool_packages(tmp_path)},
        POOL,
        {"FLAMENCO_MANAGER_URL": manager.url, "NODE_AGENT_IMDS_URL": imds.url},
        count=2,
    )
    pool.lay_out()
    pool.start()
    try:
        wait_until(lambda: [w.status for w in manager.live_workers()] == ["awake"] * 2, 60)
        env_file = tmp_path / "fleet.env"
        pool.write_env_file(env_file, {"FLAMENCO_MANAGER_URL": manager.url})
        assert env_file.stat().st_mode & 0o777 == 0o600
        for name, value in load_env_file(str(env_file)).items():
            monkeypatch.setenv(name, value)
        assert main(["fleet", "status", "--pool", pool.pool_id, "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
    finally:
        codes = pool.stop()
    assert codes == [0, 0]
    assert document["summary"]["idle"] == 2 and document["pool"]["target_dedicated"] == 1
    for node in document["nodes"]:
        assert node["agent"]["phase"] == "running" and node["worker"]["status"] == "awake"
        assert node["worker_name"] == node["agent"]["worker_name"] == node["worker"]["name"]
    assert [n["dedicated"] for n in document["nodes"]] == [True, False]


SIMULATE = REPO / "packaging" / "simulate-node"


def _simulate(tmp_path: Path, *args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    temp = tmp_path / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(SIMULATE), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
        # As a shell without job control starts a background job (`... &`).
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
        if ignore_sigint
        else None,
    )


def test_simulate_node_refuses_bad_input_without_a_traceback_or_a_leftover(
    tmp_path: Path,
) -> None:
    not_a_zip = tmp_path / "not-a.zip"
    not_a_zip.write_text("text")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    tiny = tmp_path / "tiny.zip"
    with zipfile.ZipFile(tiny, "w") as archive:
        archive.writestr("flamenco-worker", "")
    for args, code, message in (
        (("--fixture", "nope"), 2, "--fixture 'nope': no such fixture; one of "),
        (("--package", str(tmp_path / "absent.zip")), 2, "absent.zip: not a zip file"),
        (("--package", str(not_a_zip)), 2, "not-a.zip: not a zip file"),
        (("--root", str(a_file)), 2, "a-file: exists and is not a directory"),
        (("--preempt-after", "nan"), 2, "--preempt-after nan: expected seconds, from 0"),
        (("--preempt-after", "-5"), 2, "--preempt-after -5.0: expected seconds, from 0"),
        # Fails after the temporary dir was made: nothing can be created under /proc.
        (("--package", str(tiny), "--root", "/proc/simulated"), 1, "simulate-node: [Errno"),
    ):
        process = _simulate(tmp_path, *args)
        _, err = process.communicate(timeout=120)
        assert process.returncode == code, err
        assert message in err and "Traceback" not in err
        assert code != 2 or err.startswith("usage: simulate-node")
        assert list((tmp_path / "tmp").iterdir()) == []


def _children(process: subprocess.Popen[str], word: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(word in part for part in child.cmdline()):
                found.append(child)
    return found


def _interrupted(process: subprocess.Popen[str], sig: signal.Signals) -> str:
    """Send ``sig``; the simulator's stderr once it has exited."""
    process.send_signal(sig)
    try:
        return process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_signal_while_setting_up_stops_everything_and_leaves_nothing(
    package: Path, tmp_path: Path
) -> None:
    # SIGTERM while the packages are built: the builder (and its pip) is stopped.
    simulator = _simulate(tmp_path / "build", "--demo")
    builders = wait_until(lambda: _children(simulator, "packaging/build"), 60)
    err = _interrupted(simulator, signal.SIGTERM)
    assert simulator.returncode == 128 + signal.SIGTERM, err
    assert "simulate-node: stopped by SIGTERM while setting up" in err and "Traceback" not in err
    assert not psutil.wait_procs(builders, timeout=30)[1]
    assert list((tmp_path / "build" / "tmp").iterdir()) == []
    # SIGINT while a pool is laid out, though the simulator was started ignoring it.
    simulator = _simulate(
        tmp_path / "pool", "--nodes", "100", "--package", str(package), ignore_sigint=True
    )
    wait_until(lambda: list((tmp_path / "pool" / "tmp").glob("*/node-3")), 60)
    err = _interrupted(simulator, signal.SIGINT)
    assert simulator.returncode == 128 + signal.SIGINT, err
    assert "simulate-node: stopped by SIGINT while setting up" in err
    assert list((tmp_path / "pool" / "tmp").iterdir()) == []
    assert _tree_of(tmp_path / "pool") == []


def test_a_killed_simulator_leaves_no_node_running(package: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    simulator = _simulate(tmp_path, "--root", str(root), "--package", str(package))
    try:
        stdout = root / "startup" / "stdout.txt"
        signed_on = b"manager accepted sign-on"
        wait_until(lambda: stdout.exists() and signed_on in stdout.read_bytes(), 60)
        state = json.loads((root / "shared" / ".node-agent" / "state.json").read_text())
        agent, worker = psutil.Process(state["agent_pid"]), psutil.Process(state["worker_pid"])
        simulator.kill()  # SIGKILL: no chance to clean up by itself
        simulator.communicate(timeout=30)
        psutil.wait_procs([agent, worker], timeout=30)
        assert not agent.is_running() and not worker.is_running()
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.communicate()


def test_the_main_job_as_the_readme_gives_it(tmp_path: Path) -> None:
    """``./dev main``: the packages built, the node run, the demo's tasks done."""
    process = _simulate(tmp_path, "--demo")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "the worker is awake" in out and "start task exited with 0" in out
    tasks = out.split("--- tasks at the (stand-in) Manager ---")[1]
    assert tasks.count(": completed") == 3
    stdout_txt = out.split("--- startup/stdout.txt")[1].split("--- startup/stderr.txt")[0]
    assert "manager accepted sign-on startup_state=awake" in stdout_txt
    assert "\x1b" not in out and "Traceback" not in out + err
    assert list((tmp_path / "tmp").iterdir()) == []  # its temp dir removed
