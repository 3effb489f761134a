"""The stand-in v3 worker (packaging/standin-worker) behaves as the real one does:
start-up, sign-on retries, re-registration on any HTTP error answer, the requested
status, signals and exit codes, colours, and which ffmpeg it runs."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
import yaml

from node_agent.sim.standins.manager import FakeManager
from tests.helpers import wait_until
from tests.manager.test_manager import _free_port

WORKER = Path(__file__).resolve().parents[2] / "packaging" / "standin-worker" / "flamenco-worker"
NAME = "node-7"
SECRET = "s3cret-of-node-7"


class Worker:
    """The stand-in worker's working dir in ``where`` (its config names this Manager);
    ``start`` runs it, its output going to ``out.txt``."""

    def __init__(self, where: Path, url: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.where = where
        self.home = where / "home"
        self.credentials = self.home / "flamenco-worker-credentials.yaml"
        config = {"manager_url": url, "worker_name": NAME, "restart_exit_code": 75}
        (where / "flamenco-worker.yaml").write_text(yaml.safe_dump(config))
        self.out = where / "out.txt"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def registered_before(self, manager: FakeManager, status: str = "offline") -> str:
        """Credentials on disk for an entry the Manager has; its id."""
        worker = manager.add_worker(NAME, SECRET, status)
        self.home.mkdir(exist_ok=True)
        self.credentials.write_text(f"worker_id: {worker}\nworker_secret: {SECRET}\n")
        return worker

    def start(self, *args: str, exe: Path = WORKER, **env: str) -> Worker:
        environ = {
            "PATH": os.environ["PATH"],
            "FLAMENCO_HOME": str(self.home),
            "FLAMENCO_STANDIN_TIME_SCALE": "0.02",
            "NO_COLOR": "1",
            **env,
        }
        with open(self.out, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(exe), *args],
                cwd=self.where,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def log(self) -> str:
        return self.out.read_text()

    def wait(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test makes is killed afterwards, whatever happened."""
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.stop()


def _worker(workers: list[Worker], where: Path, url: str) -> Worker:
    worker = Worker(where, url)
    workers.append(worker)
    return worker


def _awake(manager: FakeManager, worker_id: str) -> bool:
    return manager.worker(worker_id).status == "awake"


def test_sign_on_is_retried_while_the_manager_cannot_be_reached(
    tmp_path: Path, workers: list[Worker]
) -> None:
    port = _free_port()
    manager = FakeManager(port)  # not serving yet
    worker = _worker(workers, tmp_path, f"http://127.0.0.1:{port}/")
    worker_id = worker.registered_before(manager)
    worker.start("-restart-exit-code", "75")
    try:
        wait_until(lambda: worker.log.count("unable to send sign-on request") >= 3)
        manager.start()
        wait_until(lambda: _awake(manager, worker_id))
        assert manager.registered_names() == []  # the same identity, no new entry
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait() == 1  # after sign-on: it signs off and exits 1
        assert manager.worker(worker_id).status == "offline"
    finally:
        manager.stop()


@pytest.mark.parametrize("answer", ["deleted", 500, 502])
def test_any_http_error_at_sign_on_makes_it_register_anew(
    tmp_path: Path, manager: FakeManager, workers: list[Worker], answer: object
) -> None:
    worker = _worker(workers, tmp_path, manager.url)
    old = worker.registered_before(manager)
    if answer == "deleted":
        manager.farm.delete(old)
    else:
        manager.fail("sign-on", int(str(answer)))
    worker.start("-restart-exit-code", "75")
    if answer == "deleted":
        new = wait_until(lambda: [w.id for w in manager.named(NAME) if w.status == "awake"])
        assert worker.process is not None and worker.process.poll() is None  # works on
    else:
        assert worker.wait() == 1  # the sign-on after registering fails too: fatal
        new = [w.id for w in manager.named(NAME) if w.id != old]
    assert manager.registered_names() == [NAME]
    assert len(new) == 1 and new[0] != old
    assert yaml.safe_load(worker.credentials.read_text())["worker_id"] == new[0]
    assert stat.S_IMODE(worker.credentials.stat().st_mode) == 0o600
    assert not Path(f"{worker.credentials}~").exists()


def test_a_failed_registration_is_fatal(
    tmp_path: Path, manager: FakeManager, workers: list[Worker]
) -> None:
    manager.fail("register-worker", 500)
    worker = _worker(workers, tmp_path, manager.url).start()
    assert worker.wait() == 1
    assert "unable to register at Manager" in worker.log
    assert not worker.credentials.exists()


@pytest.mark.parametrize(
    "case",
    [("offline", 0, "offline"), ("restart", 75, "offline"), ("testing", None, "asleep")],
)
def test_it_obeys_the_status_requested_at_sign_on(
    tmp_path: Path,
    manager: FakeManager,
    workers: list[Worker],
    case: tuple[str, Optional[int], str],
) -> None:
    requested, code, state = case
    worker = _worker(workers, tmp_path, manager.url)
    worker_id = worker.registered_before(manager)
    manager.worker(worker_id).request(requested, False)
    worker.start("-restart-exit-code", "75")
    if code is None:  # unknown: it goes asleep and asks for no task
        wait_until(lambda: manager.worker(worker_id).status == state)
        assert "unknown status requested, going asleep" in worker.log
        assert manager.server.received("POST", "/api/v3/worker/task") == []
    else:  # offline and restart: it signs off first
        assert worker.wait() == code
        assert manager.worker(worker_id).status == state
        assert manager.server.received("POST", "/api/v3/worker/sign-off")


def test_sigterm_before_sign_on_kills_it(tmp_path: Path, workers: list[Worker]) -> None:
    worker = _worker(workers, tmp_path, f"http://127.0.0.1:{_free_port()}/")
    worker.registered_before(FakeManager())
    worker.start()
    wait_until(lambda: "unable to send sign-on request" in worker.log)
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == -signal.SIGTERM  # no handler yet: killed by the signal


def test_lazy_offline_lets_the_task_finish(
    tmp_path: Path, manager: FakeManager, workers: list[Worker]
) -> None:
    sleep = [{"name": "sleep", "parameters": {"duration_in_seconds": 1}}]
    task = manager.add_task("one", "misc", sleep)
    worker = _worker(workers, tmp_path, manager.url).start()
    wait_until(lambda: manager.task_status(task) == "active")
    manager.ask("offline", lazy=True)
    assert worker.wait() == 0  # it finished the task, then signed off
    assert manager.task_status(task) == "completed"
    [entry] = manager.named(NAME)
    assert entry.status == "offline"


def test_task_updates_are_the_v3_workers(
    tmp_path: Path, manager: FakeManager, workers: list[Worker]
) -> None:
    """Started, a step after each command that counts none of its own, completed; a
    failure says why in the activity and the task log."""
    commands = [
        {"name": "echo", "parameters": {"message": "hello"}},
        {"name": "sleep", "parameters": {"duration_in_seconds": 0.1}},
    ]
    task = manager.add_task("two commands", "misc", commands)
    _worker(workers, tmp_path, manager.url).start()
    wait_until(lambda: manager.task_status(task) == "completed")
    sent = [r.json() for r in manager.server.received("POST", f"/api/v3/worker/task/{task}")]
    assert sent == [
        {"activity": "Started", "taskStatus": "active"},
        {"log": 'echo: "hello"'},
        {"activity": "Progress", "steps_completed": 1},
        {"activity": "Progress", "steps_completed": 2},
        {"activity": "Completed", "taskStatus": "completed"},
    ]
    assert manager.farm.tasks[task].steps_completed == manager.farm.tasks[task].steps_total == 2
    failing = manager.add_task("failing", "misc", [{"name": "no-such-command", "parameters": {}}])
    wait_until(lambda: manager.task_status(failing) == "failed")
    last = manager.server.received("POST", f"/api/v3/worker/task/{failing}")[-1].json()
    failed = "Failed: unknown command 'no-such-command'"
    assert last == {"activity": failed, "log": failed, "taskStatus": "failed"}


def test_flags_and_colours(tmp_path: Path, manager: FakeManager, workers: list[Worker]) -> None:
    assert _worker(workers, tmp_path / "v", manager.url).start("-version").wait() == 0
    # An unknown flag: exit 2, as Go's flag package answers it.
    assert _worker(workers, tmp_path / "u", manager.url).start("-bogus").wait() == 2
    coloured = _worker(workers, tmp_path / "c", manager.url).start(NO_COLOR="")
    plain = _worker(workers, tmp_path / "p", manager.url).start()
    wait_until(lambda: "accepted sign-on" in coloured.log and "accepted sign-on" in plain.log)
    assert "\x1b[90m" in coloured.log
    assert "\x1b" not in plain.log


def _release(tmp_path: Path, bundled_mode: Optional[int]) -> Path:
    """A copy of the stand-in worker with (or without) a bundled tools/ffmpeg-*."""
    release = tmp_path / "release"
    shutil.copytree(WORKER.parent, release)  # the worker and the modules beside it
    (release / "tools").mkdir()
    if bundled_mode is not None:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        bundled = release / "tools" / f"ffmpeg-linux-{arch}"
        bundled.write_text("#!/bin/sh\necho 'ffmpeg version 6.1-bundled'\n")
        bundled.chmod(bundled_mode)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = bin_dir / "ffmpeg"
    on_path.write_text("#!/bin/sh\necho 'ffmpeg version 7.0-on-path'\n")
    on_path.chmod(0o755)
    return release


@pytest.mark.parametrize("mode, found", [(0o755, "6.1-bundled"), (None, "7.0-on-path")])
def test_ffmpeg_beside_the_worker_comes_first(
    tmp_path: Path, manager: FakeManager, workers: list[Worker], mode: Optional[int], found: str
) -> None:
    release = _release(tmp_path, mode)
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    worker = _worker(workers, tmp_path / "w", manager.url)
    worker.start(exe=release / "flamenco-worker", PATH=path)
    wait_until(lambda: "FFmpeg found on this system" in worker.log)
    assert f"version=ffmpeg version {found}" in worker.log


def test_a_bundled_ffmpeg_that_cannot_run_is_an_error(
    tmp_path: Path, manager: FakeManager, workers: list[Worker]
) -> None:
    release = _release(tmp_path, 0o644)
    task = manager.add_task("encode", "ffmpeg", [{"name": "frames-to-video", "parameters": {}}])
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    worker = _worker(workers, tmp_path / "w", manager.url)
    worker.start(exe=release / "flamenco-worker", PATH=path)
    wait_until(lambda: manager.task_status(task) == "failed")
    assert "permission denied" in worker.log  # no fallback to the ffmpeg on PATH
