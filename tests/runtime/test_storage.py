"""The shared storage the worker needs: real mounts in a private mount namespace
(tmpfs, read-only and read-write) where the kernel permits it, and the pure parts
on their own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import psutil
import pytest

from node_agent.common.errors import InvalidInput
from node_agent.config.settings import load_settings
from node_agent.doctor import Context, Status
from node_agent.doctor.storage_checks import check_storage
from node_agent.runtime import storage
from node_agent.runtime.storage import (
    STORAGE_VARIABLE,
    Mount,
    StorageCheck,
    parse_mountinfo,
    probe,
    storage_mounts,
    wait_for_storage,
)
from tests.agent import Agent, worker_node
from tests.helpers import needs_mount_namespace, wait_until
from tests.nodes import make_node

FAST_STORAGE = {"NODE_AGENT_STORAGE_WAIT_CAP": "0.2"}


def _in_namespace(pid: int, *mount_args: str) -> None:
    """Run ``mount`` inside the mount namespace of process ``pid``."""
    subprocess.run(["nsenter", "-t", str(pid), "-m", "mount", *mount_args], check=True)


# ---- pure parts -----------------------------------------------------------------


def test_mountinfo_parsing_unescapes_and_keeps_the_top_mount() -> None:
    text = (
        "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n"
        "61 29 0:52 / /mnt/batch/tasks/fsmounts/my\\040share rw,relatime shared:30 - cifs "
        "//acct.file.core.windows.net/share rw,vers=3.0\n"
        "62 29 0:53 / /mnt/x rw - tmpfs t rw\n"
        "63 62 0:54 / /mnt/x rw - nfs4 server:/export rw\n"
        "garbage line\n"
    )
    assert parse_mountinfo(text) == {
        "/proc": "proc",
        "/mnt/batch/tasks/fsmounts/my share": "cifs",
        "/mnt/x": "nfs4",
    }


def test_storage_mounts_setting() -> None:
    environ = {
        "NODE_AGENT_STORAGE_MOUNTS": "flamenco, renders/out",
        "FLAMENCO_MANAGER_URL": "http://m/",
    }
    assert load_settings(environ, {}, None).storage_mounts == ("flamenco", "renders/out")
    assert (
        load_settings({**environ, "NODE_AGENT_STORAGE_MOUNTS": ""}, {}, None).storage_mounts == ()
    )
    assert load_settings({"FLAMENCO_MANAGER_URL": "http://m/"}, {}, None).storage_mounts == ()
    for bad in ("/mnt/share", "../share", "a/../../b"):
        with pytest.raises(InvalidInput, match="relative to AZ_BATCH_NODE_MOUNTS_DIR"):
            load_settings({**environ, "NODE_AGENT_STORAGE_MOUNTS": bad}, {}, None)


def test_mounts_dir_falls_back_to_the_documented_default(tmp_path: Path) -> None:
    seed = make_node(tmp_path / "seed", "seed")  # a 2019 node: no AZ_BATCH_NODE_MOUNTS_DIR
    assert storage_mounts(seed.env, ["flamenco"]) == (
        Mount("flamenco", f"{tmp_path}/seed/fsmounts/flamenco"),
    )
    newer = make_node(tmp_path / "newer", "newer_spot")
    assert (
        storage_mounts(newer.env, ["a"])[0].path == newer.environ["AZ_BATCH_NODE_MOUNTS_DIR"] + "/a"
    )


def test_an_empty_directory_is_not_storage(tmp_path: Path) -> None:
    """The temporary disk's empty directory, as a failed mount leaves it, against
    the kernel's real mount table."""
    (tmp_path / "flamenco").mkdir()
    status = probe(Mount("flamenco", str(tmp_path / "flamenco")))
    assert not status.ready and not status.mounted
    assert "not a mount point: an empty directory on the node's own disk" in str(status.problem)
    assert "does not exist" in str(probe(Mount("gone", str(tmp_path / "gone"))).problem)


def test_wait_backs_off_until_the_mount_table_lists_it(tmp_path: Path) -> None:
    """A stand-in mount table (this test checks the waiting, not the kernel): the
    mount appears in it after the third look."""
    share = tmp_path / "fsmounts" / "flamenco"
    share.mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / /proc rw - proc proc rw\n")
    delays: list[float] = []
    waits: list[bool] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:
            mountinfo.write_text(f"70 29 0:60 / {share} rw - cifs //a/b rw\n")

    check = StorageCheck((Mount("flamenco", str(share)),), cap=8.0, mountinfo=str(mountinfo))
    assert wait_for_storage(check, sleep, lambda: False, lambda: waits.append(True))
    assert waits == [True] and len(delays) == 3
    for attempt, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(8.0, 2 ** (attempt - 1))  # full jitter, growing window


def test_a_stop_request_ends_the_wait(tmp_path: Path) -> None:
    stop: list[bool] = []
    check = StorageCheck((Mount("x", str(tmp_path / "x")),), cap=1.0)
    assert not wait_for_storage(check, lambda _s: stop.append(True), lambda: bool(stop), list)


# ---- real mounts in a private mount namespace -------------------------------------


def test_agent_waits_for_a_mounted_writable_share(
    tmp_path: Path, run_agent: Callable[..., Agent]
) -> None:
    needs_mount_namespace()
    node = worker_node(tmp_path / "node")
    share = Path(node.environ["AZ_BATCH_NODE_MOUNTS_DIR"]) / "flamenco"
    share.mkdir(parents=True)  # what a failed mount leaves: an empty dir on the temp disk
    agent = run_agent(
        "count,wait",
        node=node,
        wrapper=("unshare", "-m", "--propagation", "private"),
        NODE_AGENT_STORAGE_MOUNTS="flamenco",
        **FAST_STORAGE,
    )
    wait_until(lambda: agent.state().get("phase") == "waiting-for-storage")
    wait_until(lambda: b"shared storage: attempt 1 after " in agent.stderr)
    assert f"{share}: not a mount point: an empty directory".encode() in agent.stderr

    _in_namespace(agent.process.pid, "-t", "tmpfs", "-o", "ro,size=1m", "share", str(share))
    wait_until(
        lambda: (
            b"mounted (tmpfs) but not writable by this user: Read-only file system" in agent.stderr
        ),
        what="the agent to see a read-only mount",
    )
    assert agent.runs() == [] and agent.state()["phase"] == "waiting-for-storage"

    _in_namespace(agent.process.pid, "-o", "remount,rw", str(share))
    state = agent.wait_running()
    assert b"shared storage ready after " in agent.stderr
    assert f"{share} (tmpfs, writable, 1.0 MiB free)".encode() in agent.stderr
    worker_env = psutil.Process(state["worker_pid"]).environ()
    assert worker_env[STORAGE_VARIABLE] == str(share)
    assert not share.exists() or list(share.iterdir()) == []  # outside: still the empty dir
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0


def test_doctor_rows_for_mounted_read_only_and_missing_storage(tmp_path: Path) -> None:
    needs_mount_namespace()
    node = make_node(tmp_path / "node", "newer_spot", manager_url="http://127.0.0.1:9/")
    mounts = Path(node.environ["AZ_BATCH_NODE_MOUNTS_DIR"])
    for name in ("good", "small", "readonly", "missing"):
        (mounts / name).mkdir(parents=True)
    script = (
        'mount -t tmpfs -o size=2g good "$1/good" && '
        'mount -t tmpfs -o size=4m small "$1/small" && '
        'mount -t tmpfs -o ro,size=4m readonly "$1/readonly" && '
        'shift && exec "$@"'
    )
    doctor = (sys.executable, "-m", "node_agent", "doctor", "--json")
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(mounts),
            *doctor,
        ],
        env={**node.environ, "NODE_AGENT_STORAGE_MOUNTS": "good small readonly missing"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows = {row["check"]: row for row in json.loads(result.stdout)["checks"]}
    good, readonly, missing = (
        rows["storage good"],
        rows["storage readonly"],
        rows["storage missing"],
    )
    assert good["status"] == "ok" and good["fix"] is None
    assert good["found"] == f"{mounts}/good (tmpfs, writable, 2.0 GiB free)"
    small = rows["storage small"]
    assert small["status"] == "warning" and small["found"].endswith("4.0 MiB free)")
    assert readonly["status"] == "failed"
    assert (
        "mounted (tmpfs) but not writable by this user: Read-only file system" in readonly["found"]
    )
    assert "dir_mode=0777,file_mode=0777" in readonly["fix"]
    assert missing["status"] == "failed" and "not a mount point" in missing["found"]
    assert "mountConfiguration" in missing["fix"]


def test_doctor_without_storage_configured(tmp_path: Path) -> None:
    node = make_node(tmp_path / "node", "newer_spot", manager_url="http://127.0.0.1:9/")
    [row] = check_storage(Context.from_environ(node.environ))
    assert row.status is Status.SKIPPED and "storage_mounts is empty" in row.found


def test_a_stop_signal_ends_the_storage_wait(
    tmp_path: Path, run_agent: Callable[..., Agent]
) -> None:
    """Storage that never comes: SIGTERM ends supervision cleanly, no worker started."""
    node = worker_node(tmp_path / "node")
    (Path(node.environ["AZ_BATCH_NODE_MOUNTS_DIR"]) / "flamenco").mkdir(parents=True)
    agent = run_agent("count,wait", node=node, NODE_AGENT_STORAGE_MOUNTS="flamenco")
    wait_until(lambda: agent.state().get("phase") == "waiting-for-storage")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert agent.runs() == []
    assert agent.state()["phase"] == "stopped"
    assert agent.state()["stop_reason"] == "received SIGTERM"


def test_a_mount_that_does_not_answer_costs_the_time_limit_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look that hangs (as on a hung NFS server; here a look that blocks until the
    test ends) is reported as not ready after the time limit."""
    release = threading.Event()
    monkeypatch.setattr(storage, "probe", lambda *_args: release.wait(60))
    try:
        [status] = storage.probe_all([Mount("nfs", str(tmp_path))], timeout=0.2)
    finally:
        release.set()
    assert not status.ready
    assert status.problem == "did not answer within 0.2 s (a network file system that hangs?)"
