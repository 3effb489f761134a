"""Shared test helpers: fixture paths and loaders."""

from __future__ import annotations

import functools
import os
import re
import select
import ssl
import subprocess
import time
from pathlib import Path
from typing import IO, Callable, Optional, TypeVar

import pytest

from node_agent.node.envfile import load_env_file

T = TypeVar("T")

FIXTURES = Path(__file__).parent / "fixtures"
AZ_ENV = FIXTURES / "az_env"
GOOD_ENVS = sorted(AZ_ENV.glob("*.env"))  # real shapes: run works on each
ODD_ENVS = sorted((AZ_ENV / "odd").glob("*.env"))  # faults run works around, with warnings
BROKEN_ENVS = sorted((AZ_ENV / "broken").glob("*.env"))  # faults run cannot work with


# The start of every line the agent logs: its time (RFC 3339, UTC, milliseconds),
# then its name and level.
STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
AGENT_LINE = re.compile(rb"^(" + STAMP + rb") node-agent: (DEBUG|INFO|WARNING|ERROR): ", re.M)


def fixture_env(name: str) -> dict[str, str]:
    """The variables of ``tests/fixtures/az_env/<name>.env``."""
    return load_env_file(str(AZ_ENV / f"{name}.env"))


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    """Poll ``predicate`` every 10 ms until it returns something truthy; fail the test
    after ``timeout`` seconds (a deadline, never a fixed wait)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


def tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side TLS context for a ``(certificate, key)`` pair."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def read_lines(stream: IO[str], count: int, timeout: float = 20.0) -> list[str]:
    """The first ``count`` lines a child process writes to a pipe (read from its file
    descriptor, never through the stream's buffer); fail the test after ``timeout``
    seconds without them (a deadline, never a blocking read)."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([stream.fileno()], [], [], max(0.0, left))
        if not ready:
            raise AssertionError(f"timed out after {timeout} s waiting for {count} line(s)")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"the stream ended before {count} line(s): {data!r}")
        data += chunk
    return [line.decode() for line in data.split(b"\n")[:count]]


@functools.cache
def _namespace_refusal() -> Optional[str]:
    """Why a private mount namespace with a tmpfs cannot be had here (None: it can)."""
    try:
        result = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "t", "/mnt"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        return "the unshare command is not installed"
    if result.returncode != 0:
        return f"unshare -m + mount not permitted here: {result.stderr.strip()}"
    return None


def needs_mount_namespace() -> None:
    reason = _namespace_refusal()
    if reason is not None:
        pytest.skip(f"a real mount needs a private mount namespace: {reason}")
