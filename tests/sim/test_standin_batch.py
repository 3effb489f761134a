"""The stand-in Batch service answers the real ``azure-batch`` SDK as the Batch REST
API 2025-06-01 does: shapes, paging, long-running operations, errors, and shared-key
or bearer-token authentication."""

from __future__ import annotations

import base64
import datetime
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.batch import BatchClient, models
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from node_agent.fleet.sdk import sdk_model
from node_agent.sim.standins.batch import FakeBatch
from node_agent.sim.standins.batch_pool import StartTaskInfo
from tests.helpers import tls_context, wait_until

BatchNodeRebootOptions = sdk_model("BatchNodeRebootOptions")
BatchNodeReimageOptions = sdk_model("BatchNodeReimageOptions")


@pytest.fixture
def batch() -> Iterator[FakeBatch]:
    batch = FakeBatch().start()
    batch.add_pool("render")
    yield batch
    batch.stop()


def client(batch: FakeBatch, key: str = "") -> BatchClient:
    return BatchClient(batch.url, AzureNamedKeyCredential(batch.name, key or batch.key))


def test_pool_and_nodes_as_the_api_shapes_them(batch: FakeBatch, tmp_path: Path) -> None:
    spot = batch.add_node("render", root=tmp_path)
    batch.add_node("render", dedicated=True, start_task=StartTaskInfo("completed", 1))
    batch.add_node("render", state="preempted")
    sdk = client(batch)
    pool = sdk.get_pool("render")
    assert pool.allocation_state == "steady" and not pool.enable_auto_scale
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (1, 2)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (1, 2)
    nodes = list(sdk.list_nodes("render", max_results=2))  # two pages
    assert nodes[0].id == spot.id and len(nodes) == 3
    assert len(batch.received("GET", "/pools/render/nodes?")) == 2
    failed = nodes[1].start_task_info
    assert failed is not None and failed.state == "completed" and failed.exit_code == 1
    assert failed.result == "failure" and failed.failure_info is not None
    assert failed.failure_info.code == "FailureExitCode"
    assert nodes[2].state == "preempted" and nodes[2].is_dedicated is False
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "state.json").write_bytes(b"{}")
    assert b"".join(sdk.download_node_file("render", spot.id, "shared/state.json")) == b"{}"
    sent = batch.received("GET", f"/pools/render/nodes/{spot.id}/files/")[0]
    assert "shared%2Fstate.json" in sent.path  # the SDK encodes the path's slashes


def _code(error: HttpResponseError) -> str:
    if error.error is not None and error.error.code:
        return str(error.error.code)
    if error.response is None:
        return ""
    error.response.read()  # a streamed answer (a file's) is not read yet
    body: dict[str, Any] = error.response.json()
    return str(body.get("code"))


def test_errors_in_batch_error_shape(batch: FakeBatch) -> None:
    node = batch.add_node("render", state="starting")
    sdk = client(batch)
    with pytest.raises(ResourceNotFoundError) as missing:
        sdk.get_pool("nope")
    assert _code(missing.value) == "PoolNotFound" and missing.value.status_code == 404
    with pytest.raises(HttpResponseError) as not_up:
        b"".join(sdk.download_node_file("render", node.id, "shared/x"))
    assert not_up.value.status_code == 409 and _code(not_up.value) == "NodeBeingStarted"
    answer = requests.get(f"{batch.url}/pools/render", timeout=5)  # not signed at all
    body = answer.json()
    assert answer.status_code == 403 and body["code"] == "AuthenticationFailed"
    assert set(body["message"]) == {"lang", "value"} and body["values"][0]["key"]


def test_shared_key_is_checked_with_the_account_key(batch: FakeBatch) -> None:
    wrong = base64.b64encode(os.urandom(64)).decode()
    with pytest.raises(HttpResponseError) as refused:
        client(batch, wrong).get_pool("render")
    assert refused.value.status_code == 403 and _code(refused.value) == "AuthenticationFailed"
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    with pytest.raises(HttpResponseError) as old:
        client(batch).get_pool("render", ocp_date=stale)
    assert old.value.status_code == 403
    assert client(batch).get_pool("render").id == "render"


def test_resize_and_remove_exactly_those_nodes(batch: FakeBatch) -> None:
    batch.account.settle_after = 3600  # changes stay pending until settle()
    keep, drop = batch.add_node("render"), batch.add_node("render")
    sdk = client(batch)
    sdk.begin_remove_nodes(
        "render", models.BatchNodeRemoveOptions(node_ids=[drop.id]), polling_interval=1
    )
    pool = sdk.get_pool("render")
    assert pool.allocation_state == "resizing" and pool.target_low_priority_nodes == 1
    assert sdk.get_node("render", drop.id).state == "leavingpool"
    with pytest.raises(HttpResponseError) as busy:
        sdk.begin_resize_pool("render", models.BatchPoolResizeOptions(target_low_priority_nodes=3))
    assert busy.value.status_code == 409 and _code(busy.value) == "PoolBeingResized"
    batch.settle()
    assert [n.id for n in sdk.list_nodes("render")] == [keep.id]
    with pytest.raises(HttpResponseError) as too_many:
        sdk.begin_remove_nodes("render", models.BatchNodeRemoveOptions(node_ids=[keep.id] * 101))
    assert too_many.value.status_code == 400
    resize = models.BatchPoolResizeOptions(target_dedicated_nodes=0, target_low_priority_nodes=3)
    sdk.begin_resize_pool("render", resize, polling_interval=1)
    batch.settle()
    pool = sdk.get_pool("render")
    assert pool.allocation_state == "steady" and pool.current_low_priority_nodes == 3
    body = batch.received("POST", "/pools/render/resize")[-1].json()
    assert body == {"targetDedicatedNodes": 0, "targetLowPriorityNodes": 3}


def test_reboot_and_reimage_only_idle_or_running_nodes(batch: FakeBatch) -> None:
    """Reboot Node and Reimage Node: "only if it is in an idle or running state"
    (REST API 2025-06-01); the refusal is a 409 with the documented code nearest the
    node's state, never NodeNotReady (no such code is documented)."""
    sdk = client(batch)
    refusals = {
        "creating": "NodeBeingCreated",
        "starting": "NodeBeingStarted",
        "waitingforstarttask": "NodeBeingStarted",
        "rebooting": "NodeBeingRebooted",
        "reimaging": "NodeBeingReimaged",
        "unusable": "NodeStateUnusable",
        "starttaskfailed": "OperationInvalidForCurrentState",
        "preempted": "OperationInvalidForCurrentState",
        "leavingpool": "OperationInvalidForCurrentState",
    }
    for state, code in refusals.items():
        node = batch.add_node("render", state=state)
        for how in ("reboot", "reimage"):
            with pytest.raises(HttpResponseError) as refused:
                if how == "reboot":
                    options = BatchNodeRebootOptions(node_reboot_kind="requeue")
                    sdk.begin_reboot_node("render", node.id, options)
                else:
                    options = BatchNodeReimageOptions(node_reimage_option="requeue")
                    sdk.begin_reimage_node("render", node.id, options)
            assert (refused.value.status_code, _code(refused.value)) == (409, code), state
        assert node.state == state  # nothing changed
    for blocked in ("creating", "rebooting", "preempted"):
        node = batch.add_node("render", state=blocked)
        with pytest.raises(HttpResponseError) as not_up:
            b"".join(sdk.download_node_file("render", node.id, "shared/x"))
        assert _code(not_up.value) != "NodeNotReady" and not_up.value.status_code == 409


def test_reboot_and_reimage_run_the_start_task_again(batch: FakeBatch, tmp_path: Path) -> None:
    failed = batch.add_node("render", start_task=StartTaskInfo("completed", 1))
    running = batch.add_node("render", state="running", root=tmp_path)
    (tmp_path / "file").write_text("x")
    sdk = client(batch)
    sdk.begin_reboot_node(
        "render", failed.id, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=0
    ).result()
    info = sdk.get_node("render", failed.id).start_task_info
    assert info is not None and info.state == "running"
    sdk.begin_reimage_node(
        "render",
        running.id,
        BatchNodeReimageOptions(node_reimage_option="requeue"),
        polling_interval=0,
    ).result()
    assert sdk.get_node("render", running.id).state == "idle"
    with pytest.raises(ResourceNotFoundError):  # a new OS disk: its files are gone
        b"".join(sdk.download_node_file("render", running.id, "file"))


def test_package_references_reach_a_node_when_it_joins_or_reboots(batch: FakeBatch) -> None:
    """Update Pool replaces the pool's package references; a node gets them only
    when it joins, reboots or is reimaged; a reference to a version the application
    lacks is refused (InvalidApplicationPackageReferences)."""
    batch.add_application("flamenco-worker", {"3.5": None, "3.6": None}, default="3.5")
    app = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/a/"
    app += "applications/flamenco-worker"
    pool = batch.add_pool("versioned", references=[{"applicationId": app}])
    old = batch.add_node("versioned")
    assert old.packages["flamenco-worker"].version == "3.5"
    sdk = client(batch)
    reference = models.BatchApplicationPackageReference(application_id=app, version="3.6")
    sdk.update_pool(
        "versioned", models.BatchPoolUpdateOptions(application_package_references=[reference])
    )
    got = sdk.get_pool("versioned").application_package_references
    assert got is not None and [(r.application_id, r.version) for r in got] == [(app, "3.6")]
    assert pool.references == [{"applicationId": app, "version": "3.6"}]
    assert old.packages["flamenco-worker"].version == "3.5"  # not until it reboots
    booted = old.booted
    requeue = BatchNodeRebootOptions(node_reboot_kind="requeue")
    sdk.begin_reboot_node("versioned", old.id, requeue, polling_interval=0).result()
    assert old.packages["flamenco-worker"].version == "3.6" and old.booted > booted
    assert sdk.get_node("versioned", old.id).last_boot_time is not None
    missing = models.BatchApplicationPackageReference(application_id=app, version="9.9")
    with pytest.raises(HttpResponseError) as refused:
        sdk.update_pool(
            "versioned", models.BatchPoolUpdateOptions(application_package_references=[missing])
        )
    assert (refused.value.status_code, _code(refused.value)) == (
        409,
        "InvalidApplicationPackageReferences",
    )


class _Token:
    """A Microsoft Entra token credential, as azure-identity's give."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://batch.core.windows.net//.default",)
        return AccessToken("entra-token", int(time.time()) + 3600)


def test_entra_bearer_tokens_over_tls(certificate: tuple[Path, Path]) -> None:
    batch = FakeBatch(token="entra-token", tls=tls_context(certificate)).start()
    try:
        batch.add_pool("render")
        sdk = BatchClient(batch.url, _Token(), connection_verify=str(certificate[0]))
        assert batch.url.startswith("https://") and sdk.get_pool("render").id == "render"
        [sent] = batch.received("GET", "/pools/render")
        assert sent.headers["Authorization"] == "Bearer entra-token"
    finally:
        batch.stop()


def test_a_client_that_vanishes_mid_request_prints_no_traceback(
    batch: FakeBatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A killed node resets its connections: the stand-in shrugs, as a real server
    does, instead of printing socketserver's ConnectionResetError traceback."""
    port = int(batch.url.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /pools/render?api-version=2025-06-01 HTTP/1.1\r\nHost: x\r\n")
            # Closed with a reset (SO_LINGER 0), as the kernel does for a killed process
            # whose socket had unread data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    answer = requests.get(f"{batch.url}/pools/render", timeout=5)  # still serving
    assert answer.status_code == 403
    wait_until(lambda: len(batch.received("GET", "/pools/render")) == 1, 10)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ConnectionResetError" not in err
