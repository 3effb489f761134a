"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, settings

from node_agent.sim.standins.batch import FakeBatch
from node_agent.sim.standins.imds import FakeImds
from node_agent.sim.standins.manager import SPEC_ENV, FakeManager
from tests.agent import Agent, start_agent
from tests.fleet_farm import POOL, Farm
from tests.packages import STANDIN_WORKER, WITH_BYTECODE, build_package

pytest_plugins = ["tests.optional_tools"]  # a skip, not an error, without lzma

# Hypothesis's per-example deadline (200 ms) and its too-slow health check measure wall
# time: on a loaded machine a starved example takes longer (seen: 499 ms, then 0.27 ms
# on the rerun) and the test fails as flaky. Tests never assert wall-clock times.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# Every stand-in Manager of the suite, in this process and in those it starts, checks
# each request and answer against the real Manager's OpenAPI specification.
if not os.environ.get(SPEC_ENV):
    os.environ[SPEC_ENV] = str(
        Path(__file__).parent / "fixtures" / "flamenco" / "flamenco-openapi.yaml"
    )


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start the real agent (``tests.agent.start_agent``) in ``tmp_path`` or ``where``;
    every agent started is stopped, with its tree and stand-ins, after the test."""
    started: list[Agent] = []

    def start(steps: str, where: Optional[Path] = None, **kwargs: Any) -> Agent:
        agent = start_agent(where or tmp_path, steps, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def services() -> Iterator[tuple[FakeManager, FakeImds]]:
    """A stand-in Manager and Metadata Service, serving, stopped after the test."""
    manager, imds = FakeManager().start(), FakeImds().start()
    yield manager, imds
    manager.stop()
    imds.stop()


@pytest.fixture
def manager() -> Iterator[FakeManager]:
    """A stand-in Manager, serving, stopped after the test."""
    manager = FakeManager().start()
    yield manager
    manager.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip(
            "no openssl command to make a certificate (Debian/Ubuntu: apt-get install openssl)"
        )
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"]
    command += ["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flamenco-worker package with the stand-in worker, built once."""
    out = tmp_path_factory.mktemp("package") / "flamenco-worker.zip"
    result = build_package(STANDIN_WORKER, out, *WITH_BYTECODE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"built {out}: ") and "MiB" in result.stdout
    assert "bytecode for python " in result.stdout
    return out


@pytest.fixture
def farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Farm]:
    """A stand-in Batch account with pool ``render`` and a stand-in Manager, the
    environment set for ``node-agent fleet``; stopped after the test."""
    batch, manager = FakeBatch().start(), FakeManager().start()
    batch.add_pool(POOL)
    monkeypatch.setenv("AZURE_BATCH_ENDPOINT", batch.url)
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT", batch.name)
    monkeypatch.setenv("AZURE_BATCH_ACCESS_KEY", batch.key)
    monkeypatch.setenv("FLAMENCO_MANAGER_URL", manager.url)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield Farm(batch, manager, tmp_path / "nodes")
    batch.stop()
    manager.stop()
