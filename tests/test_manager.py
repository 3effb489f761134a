"""Waiting for the Manager and forgetting a worker, against real local servers."""

from __future__ import annotations

import logging
import re
import socket
import threading
from pathlib import Path
from typing import Optional

import pytest

from node_agent.flavour import Flavour
from node_agent.manager import (
    ManagerCheck,
    ManagerUnavailable,
    forget_worker,
    wait_for_manager,
    worker_id,
)
from node_agent.standins.manager import FakeManager
from node_agent.standins.server import Request, Response, StandinServer
from tests.nodes import CLOSED_LOOPBACK


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check(
    url: str, flavour: Flavour = Flavour.V3, deadline: Optional[float] = None, timeout: float = 5.0
) -> ManagerCheck:
    return ManagerCheck(
        url=url,
        flavour=flavour,
        cap=60.0,
        deadline=deadline,
        credentials=Path("/nonexistent"),
        timeout=timeout,
    )


def test_waits_until_the_manager_comes_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    port = _free_port()
    delays: list[float] = []
    managers: list[FakeManager] = []

    def sleep(seconds: float) -> None:
        # tenacity's sleep: record the delay instead of spending it; after the
        # fifth refused attempt the Manager comes up.
        delays.append(seconds)
        if len(delays) == 5:
            managers.append(FakeManager(port).start())

    try:
        answer = wait_for_manager(_check(f"http://127.0.0.1:{port}/"), sleep, lambda: False)
    finally:
        for manager in managers:
            manager.stop()
    assert answer == "Flamenco Manager 3.6-standin"
    assert len(delays) == 5
    for attempt, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(60, 2 ** (attempt - 1))  # full jitter, growing window
    assert len(set(delays)) == 5  # spread, not in lockstep
    messages = [r.getMessage() for r in caplog.records]
    attempts = [m for m in messages if ": connection refused; next attempt in " in m]
    assert len(attempts) == 5
    assert re.search(r"attempt 1 after \d+\.\d s: connection refused", attempts[0])
    assert "answered after" in messages[-1]


@pytest.mark.parametrize("status", [503, 404])
def test_http_errors_are_named(status: int) -> None:
    server = StandinServer(lambda request: Response(status, {})).start()
    try:
        with pytest.raises(ManagerUnavailable, match=f"HTTP {status}"):
            wait_for_manager(_check(server.url, deadline=0.01), lambda s: None, lambda: False)
        # v2 Managers have no version endpoint: any HTTP answer will do.
        assert (
            wait_for_manager(_check(server.url, Flavour.V2), lambda s: None, lambda: False)
            == f"HTTP {status}"
        )
    finally:
        server.stop()


def test_tls_and_timeout_are_named() -> None:
    release = threading.Event()

    def hang(request: Request) -> Optional[Response]:
        release.wait(10)
        return None

    server = StandinServer(hang).start()
    try:
        tls = server.url.replace("http://", "https://")
        with pytest.raises(ManagerUnavailable, match="TLS error"):
            wait_for_manager(_check(tls, deadline=0.01), lambda s: None, lambda: False)
        with pytest.raises(ManagerUnavailable, match="timeout"):
            wait_for_manager(
                _check(server.url, deadline=0.01, timeout=0.2), lambda s: None, lambda: False
            )
    finally:
        release.set()
        server.stop()


def test_a_stop_request_ends_the_wait() -> None:
    with pytest.raises(ManagerUnavailable, match="connection refused"):
        wait_for_manager(_check(CLOSED_LOOPBACK), lambda s: None, lambda: True)


def test_forget_worker(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    manager = FakeManager().start()
    try:
        manager.workers["w-1"] = {"name": "node-1", "status": "offline"}
        assert forget_worker(manager.url, "w-1")
        assert manager.workers == {}
        assert forget_worker(manager.url, "w-1")  # already gone: 404 is fine
    finally:
        manager.stop()
    assert not forget_worker(CLOSED_LOOPBACK, "w-1")
    assert "could not remove worker w-1 from the Manager: connection refused" in caplog.text


def test_worker_id_from_credentials(tmp_path: Path) -> None:
    credentials = tmp_path / "flamenco-worker-credentials.yaml"
    assert worker_id(credentials) is None
    credentials.write_text("worker_id: 7d3b\nworker_secret: s3cret\n")
    assert worker_id(credentials) == "7d3b"
    credentials.write_text("- not a mapping\n")
    assert worker_id(credentials) is None
