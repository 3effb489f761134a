"""fleet against a Batch service that does not behave: one that accepts connections
and never answers (fleet's own time limits, and SIGTERM ends a scaling loop at
once), answers that are not what Batch sends (one clear message each, never a
traceback); and the SDK's option classes found through one shim."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from node_agent.fleet.sdk import sdk_model
from node_agent.sim.standins.server import Request, Response, StandinServer
from tests.fleet_farm import POOL, Farm, fleet
from tests.helpers import wait_until


@pytest.fixture
def silent() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that accepts connections and never says a word: its URL, and the
    connections it took."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    taken: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                taken.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", taken
    listener.close()
    for connection in taken:
        connection.close()


def test_a_silent_batch_fails_within_fleets_own_time_limit(
    farm: Farm,
    silent: tuple[str, list[socket.socket]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, taken = silent
    monkeypatch.setenv("AZURE_BATCH_ENDPOINT", url)
    code, out, err = fleet(capsys, "status", "--timeout", "0.5")
    assert code == 1 and out == ""
    assert f"get pool {POOL}: no answer within 0.5 s (3 tries; --timeout)" in err
    assert len(taken) == 3 and "Traceback" not in err


def test_sigterm_ends_a_scaling_round_at_once(
    farm: Farm, silent: tuple[str, list[socket.socket]]
) -> None:
    """A round waiting for a Batch that never answers (a five-minute limit) ends at
    once on SIGTERM, with exit 0 as every scaling loop's end."""
    url, taken = silent
    env = {**os.environ, "AZURE_BATCH_ENDPOINT": url}
    command = [sys.executable, "-m", "node_agent", "fleet", "scale", "--pool", POOL]
    scaler = subprocess.Popen(
        [*command, "--min", "0", "--max", "2", "--every", "60", "--apply", "--timeout", "300"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: taken, 60, "the scaler's first call")
        scaler.send_signal(signal.SIGTERM)
        code = scaler.wait(60)  # the call alone would take 300 s and more
    finally:
        if scaler.poll() is None:
            scaler.kill()
    _, err = scaler.communicate()
    assert code == 0, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err


ANSWERS = {
    "an HTML page": (b"<html><body>Sign in to the proxy</body></html>", "text/html", "pool"),
    "a count that is text": (
        json.dumps({"id": POOL, "targetDedicatedNodes": "abc"}).encode(),
        "application/json",
        "pool",
    ),
    "autoscale 'yes'": (
        json.dumps({"id": POOL, "enableAutoScale": "yes"}).encode(),
        "application/json",
        "pool",
    ),
    "nodes that are not a list": (
        json.dumps({"value": "not a list"}).encode(),
        "application/json",
        "nodes",
    ),
    "a node that is a number": (json.dumps({"value": [7]}).encode(), "application/json", "nodes"),
}


@pytest.mark.parametrize("what", list(ANSWERS))
def test_an_answer_batch_never_sends_is_one_clear_message(
    what: str, farm: Farm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body, content_type, where = ANSWERS[what]
    pool = json.dumps({"id": POOL, "allocationState": "steady"}).encode()

    def answer(request: Request) -> Optional[Response]:
        path = request.path.split("?")[0]
        if path == f"/pools/{POOL}":
            return Response(200, body if where == "pool" else pool, (), content_type)
        return Response(200, body, (), content_type)

    server = StandinServer(answer).start()
    try:
        monkeypatch.setenv("AZURE_BATCH_ENDPOINT", server.url)
        code, out, err = fleet(capsys, "status", "--timeout", "5")
    finally:
        server.stop()
    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert "the answer is not what Batch sends" in line and "proxy in the way" in line
    assert "Traceback" not in err and "AttributeError" not in err
    if what == "a count that is text":
        assert 'targetDedicatedNodes is "abc", not a count of nodes' in line
    if what == "autoscale 'yes'":
        assert 'enableAutoScale is "yes", not true or false' in line


def test_the_sdk_shim_takes_the_public_class_first(monkeypatch: pytest.MonkeyPatch) -> None:
    public, private = types.ModuleType("fake_public"), types.ModuleType("fake_private")
    private.Options = "private"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_public", public)
    monkeypatch.setitem(sys.modules, "fake_private", private)
    places = ("fake_public", "fake_private")
    assert sdk_model("Options", places) == "private"
    public.Options = "public"  # type: ignore[attr-defined]
    assert sdk_model("Options", places) == "public"
    with pytest.raises(ModuleNotFoundError) as missing:
        sdk_model("Nothing", places)
    assert missing.value.name == "azure.batch"
    reboot: Any = sdk_model("BatchNodeRebootOptions")
    assert reboot(node_reboot_kind="requeue")["nodeRebootOption"] == "requeue"


def test_fleet_takes_the_reboot_options_from_the_public_namespace_when_it_has_them() -> None:
    """An SDK release that exports the option classes publicly and keeps them out of
    its private module (as it may once it fixes 15.1.0's omission) still works."""
    moved = (
        "import azure.batch.models as public, azure.batch.models._models as private; "
        "public.BatchNodeRebootOptions = private.BatchNodeRebootOptions; "
        "del private.BatchNodeRebootOptions; "
        "import node_agent.fleet.batch as batch; "
        "print(batch.BatchNodeRebootOptions is public.BatchNodeRebootOptions)"
    )
    result = subprocess.run(
        [sys.executable, "-c", moved], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
