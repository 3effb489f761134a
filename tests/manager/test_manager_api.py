"""The worker-management client (``manager_api``) never raises: every answer a
Manager, a proxy or something else at its address may give ends in None or False
and a warning, against a real local server."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest

from node_agent.manager.api import (
    ManagerApi,
    ManagerWorker,
    WorkerTag,
    delete_worker,
    get_worker,
    list_tags,
    list_workers,
    set_status,
    set_tags,
)
from node_agent.sim.standins.server import Response, StandinServer

WORKER = {"id": "w-1", "name": "n", "status": "awake", "version": "3.6"}
MALFORMED: list[Any] = [
    b"not JSON",
    b"null",
    [],
    "a string",
    {"workers": 5, "tags": 5},
    {"workers": "w-1", "tags": "t-1"},
    {"workers": {"id": "w-1"}, "tags": {"id": "t-1"}},
    {"workers": [5], "tags": [5]},
    {"workers": [None], "tags": [None]},
    {"workers": [{"id": 5}], "tags": [{"id": 5}]},
    {"workers": [{**WORKER, "tags": 5}], "tags": [{"id": "t", "name": "x"}, "t-2"]},
    {"workers": [{**WORKER, "tags": [{"id": 7}]}], "tags": [[]]},
]
WORKER_MALFORMED: list[Any] = [
    b"not JSON",
    b"null",
    ["w-1"],
    {"id": None},
    {**WORKER, "tags": 5},
    {**WORKER, "tags": "t-1"},
    {**WORKER, "tags": [5]},
]


def _answering(body: Any) -> StandinServer:
    return StandinServer(lambda request: Response(200, body)).start()


@pytest.mark.parametrize("body", MALFORMED)
@pytest.mark.parametrize("call", [list_workers, list_tags])
def test_a_malformed_list_is_none_and_a_warning(
    body: Any, call: Callable[[ManagerApi], Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    server = _answering(body)
    try:
        assert call(ManagerApi(server.url, timeout=5.0)) is None
    finally:
        server.stop()
    assert caplog.messages and caplog.messages[-1].startswith("could not list the ")


@pytest.mark.parametrize("body", WORKER_MALFORMED)
def test_a_malformed_worker_is_none_and_a_warning(
    body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    server = _answering(body)
    try:
        assert get_worker(ManagerApi(server.url, timeout=5.0), "w-1") is None
    finally:
        server.stop()
    assert caplog.messages[-1].startswith("could not fetch worker w-1: ")


def test_odd_but_usable_fields_are_read_leniently() -> None:
    body = {
        "workers": [
            {**WORKER, "status_change": "now", "last_seen": 5, "tags": None},
            {**WORKER, "id": "w-2", "status_change": {"status": 5, "is_lazy": "yes"}},
        ],
        "tags": [{"id": "t-1", "name": 3, "description": None}],
    }
    server = _answering(body)
    try:
        api = ManagerApi(server.url, timeout=5.0)
        first, second = list_workers(api) or []
        tags = list_tags(api)
    finally:
        server.stop()
    assert first == ManagerWorker("w-1", "n", "awake", "3.6", False, last_seen="5")
    assert (second.requested, second.lazy) == ("5", True)
    assert tags == [WorkerTag("t-1", "3")]


def test_every_call_fails_softly_when_nothing_answers() -> None:
    api = ManagerApi("http://127.0.0.1:9/", timeout=5.0)
    assert list_workers(api) is None and list_tags(api) is None
    assert get_worker(api, "w-1") is None
    assert not set_status(api, "w-1", "offline", lazy=True)
    assert not set_tags(api, "w-1", ["t-1"])
    assert not delete_worker(api, "w-1", "a test")
