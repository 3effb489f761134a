"""Waiting for the Manager and forgetting a worker, against real local servers."""

from __future__ import annotations

import logging
import re
import socket
import threading
from pathlib import Path
from typing import Optional

import pytest

from node_agent.manager.api import ManagerApi
from node_agent.manager.credentials import worker_id
from node_agent.manager.transport import proxies_for
from node_agent.manager.wait import ManagerCheck, ManagerUnavailable, wait_for_manager
from node_agent.node.flavour import Flavour
from node_agent.sim.standins.manager import FakeManager
from node_agent.sim.standins.server import Request, Response, StandinServer
from tests.nodes import CLOSED_LOOPBACK


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check(
    url: str, flavour: Flavour = Flavour.V3, deadline: Optional[float] = None, timeout: float = 5.0
) -> ManagerCheck:
    return ManagerCheck(ManagerApi(url, timeout=timeout), flavour, cap=60.0, deadline=deadline)


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
    assert answer == "Flamenco Manager 3.9-standin"
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


@pytest.mark.parametrize("body", [b"[]", b'"a captive portal"', b"null", b"5"])
def test_json_that_is_no_object_is_not_a_manager(body: bytes) -> None:
    server = StandinServer(lambda request: Response(200, body)).start()
    try:
        with pytest.raises(ManagerUnavailable, match="HTTP 200 but not a JSON object"):
            wait_for_manager(_check(server.url, deadline=0.01), lambda s: None, lambda: False)
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


def test_proxies_follow_the_workers_rules() -> None:
    proxy = {"HTTP_PROXY": "http://proxy:3128", "https_proxy": "proxy:3129"}
    assert proxies_for("http://manager:8080/", proxy) == {"http": "http://proxy:3128"}
    # Lower case too, and a proxy without a scheme is http://, as Go reads it.
    assert proxies_for("https://manager/", proxy) == {"https": "http://proxy:3129"}
    # Upper case wins over lower case, as in Go.
    both = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2"}
    assert proxies_for("http://manager/", both) == {"http": "http://upper:1"}
    # Never for a loopback host; not for a host NO_PROXY names.
    assert proxies_for("http://127.0.0.1:8080/", proxy) == {}
    assert proxies_for("http://localhost/", proxy) == {}
    no_proxy = {**proxy, "NO_PROXY": "10.0.0.4,.farm.example"}
    assert proxies_for("http://10.0.0.4:8080/", no_proxy) == {}
    assert proxies_for("http://manager.farm.example/", no_proxy) == {}
    assert proxies_for("http://10.0.0.5:8080/", no_proxy) == {"http": "http://proxy:3128"}
    assert proxies_for("http://manager/", {}) == {}


def test_the_wait_goes_through_the_workers_proxy() -> None:
    # The Manager's address is unreachable; the "proxy" is a local server that answers.
    proxy = StandinServer(lambda request: Response(200, {"version": "via-proxy"})).start()
    try:
        api = ManagerApi.for_worker("http://manager.invalid:8080/", {"HTTP_PROXY": proxy.url})
        check = ManagerCheck(api, Flavour.V3, cap=1.0, deadline=None)
        assert wait_for_manager(check, lambda s: None, lambda: False) == (
            "Flamenco Manager via-proxy"
        )
        [request] = proxy.requests
        assert request.path == "http://manager.invalid:8080/api/v3/version"  # proxy form
    finally:
        proxy.stop()


def test_worker_id_from_credentials(tmp_path: Path) -> None:
    credentials = tmp_path / "flamenco-worker-credentials.yaml"
    assert worker_id(credentials) is None
    credentials.write_text("worker_id: 7d3b\nworker_secret: s3cret\n")
    assert worker_id(credentials) == "7d3b"
    credentials.write_text("- not a mapping\n")
    assert worker_id(credentials) is None
