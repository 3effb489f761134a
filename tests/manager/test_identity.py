"""The Manager client and the identity keeper (one entry per node, with its tags)
against the stand-in Manager on 127.0.0.1."""

from __future__ import annotations

import logging
from pathlib import Path

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
from node_agent.manager.identity import IdentityKeeper, duplicates, match_tags
from node_agent.manager.worker_ids import KEEP, WorkerIds
from node_agent.sim.standins.manager import FakeManager
from tests.helpers import wait_until
from tests.nodes import CLOSED_LOOPBACK

NAME = "pool-node-1"


def _entry(worker_id: str, name: str, status: str) -> ManagerWorker:
    return ManagerWorker(worker_id, name, status, "3.6", True)


def test_which_entries_are_stale() -> None:
    workers = [
        _entry("me", NAME, "awake"),
        _entry("old", NAME, "offline"),
        _entry("timed-out", NAME, "error"),
        _entry("never-signed-on", NAME, ""),
        _entry("still-shown-awake", NAME, "awake"),
        _entry("other-node", "pool-node-2", "offline"),
    ]
    remove, live = duplicates(workers, NAME, "me")
    assert [w.id for w in remove] == ["old", "timed-out", "never-signed-on"]
    assert [w.id for w in live] == ["still-shown-awake"]


def test_tags_match_by_name() -> None:
    known = [WorkerTag("t1", "GPU"), WorkerTag("t2", "Cycles GPU")]
    assert match_tags(known, ["Cycles GPU", "CPU"]) == (["t2"], ["CPU"])


def test_the_client(manager: FakeManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    api = ManagerApi(manager.url)
    worker = manager.add_worker(NAME, "s3cret", "awake")
    gpu = manager.add_tag("GPU")
    [listed] = list_workers(api) or []
    assert (listed.id, listed.name, listed.status) == (worker, NAME, "awake")
    assert list_tags(api) == [WorkerTag(gpu, "GPU")]
    assert set_tags(api, worker, [gpu])
    fetched = get_worker(api, worker)
    assert fetched is not None and fetched.tags == (WorkerTag(gpu, "GPU"),)
    assert set_status(api, worker, "offline", lazy=True)
    fetched = get_worker(api, worker)
    assert fetched is not None and (fetched.requested, fetched.lazy) == ("offline", True)
    assert f"asked worker {worker} to go offline once its current task is done" in caplog.text
    assert delete_worker(api, worker, "test")
    assert delete_worker(api, worker, "test")  # already gone (404) is gone
    assert get_worker(api, worker) is None
    assert not delete_worker(api, "not-a-uuid", "test")
    assert "HTTP 400: not a valid UUID" in caplog.text
    assert f'HTTP 404: worker "{worker}" not found' in caplog.text


def test_the_client_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    api = ManagerApi(CLOSED_LOOPBACK)
    assert list_workers(api) is None and list_tags(api) is None
    assert get_worker(api, "x") is None
    assert not set_status(api, "x", "offline", lazy=False)
    assert not set_tags(api, "x", [])
    assert not delete_worker(api, "x", "test")
    assert caplog.text.count("connection refused") == 6


def _keeper(manager: FakeManager, credentials: Path, tags: tuple[str, ...]) -> IdentityKeeper:
    return IdentityKeeper(
        ManagerApi(manager.url), credentials, NAME, tags, first_look=0.01, rechecks=(0.01,)
    )


def _register(manager: FakeManager, credentials: Path, status: str = "") -> str:
    worker = manager.add_worker(NAME, "s3cret", status)
    credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
    return worker


def test_a_new_registration_is_tagged_and_stale_entries_removed(
    manager: FakeManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    credentials = tmp_path / "flamenco-worker-credentials.yaml"
    gpu = manager.add_tag("GPU")
    old = manager.add_worker(NAME, "lost", "offline")
    live = manager.add_worker(NAME, "killed", "awake")  # not timed out yet
    other = manager.add_worker("pool-node-2", "theirs", "offline")
    keeper = _keeper(manager, credentials, ("GPU", "NVMe"))
    assert keeper._look(1) is not None  # no credentials yet: look again later
    current = _register(manager, credentials)  # registered, not signed on yet
    assert keeper._look(2) is not None
    assert manager.worker(current).tag_ids == [gpu]
    assert not manager.worker(old).deleted  # not before the worker signed on
    manager.worker(current).status = "awake"
    assert keeper._look(3) == 0.01  # cleaned; the live duplicate is looked at again
    assert manager.worker(old).deleted
    assert not manager.worker(live).deleted and not manager.worker(other).deleted
    manager.worker(live).status = "error"  # the Manager timed it out
    assert keeper._look(4) is None  # done: nothing more until the next worker start
    assert manager.worker(live).deleted
    assert [w.id for w in manager.named(NAME)] == [current]
    # The worker signed off, and registered anew at its next start (its sign-on got
    # an HTTP error answer): the new entry is tagged too, the old one removed; the
    # missing tag was reported once only.
    manager.worker(current).status = "offline"
    again = _register(manager, credentials, "awake")
    assert keeper._look(1) is None
    assert manager.worker(again).tag_ids == [gpu] and manager.worker(current).deleted
    assert caplog.text.count("worker_tags: the Manager has no tag 'NVMe'") == 1
    assert f"removed worker {old} from the Manager" in caplog.text


def test_credentials_from_before_are_not_a_new_registration(
    manager: FakeManager, tmp_path: Path
) -> None:
    credentials = tmp_path / "flamenco-worker-credentials.yaml"
    manager.add_tag("GPU")
    current = _register(manager, credentials, "awake")
    stale = manager.add_worker(NAME, "lost", "")
    keeper = _keeper(manager, credentials, ("GPU",)).start()
    try:
        keeper.worker_started()
        wait_until(lambda: manager.worker(stale).deleted)
    finally:
        keeper.stop()
    assert manager.worker(current).tag_ids == []  # tags are for new registrations only
    assert manager.server.received("POST", "/api/v3/worker-mgt/workers") == []


def test_a_manager_that_is_down_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "flamenco-worker-credentials.yaml"
    keeper = IdentityKeeper(ManagerApi(CLOSED_LOOPBACK), credentials, NAME, ("GPU",))
    credentials.write_text("worker_id: 5c1f0e2a-8d47-4a8b-9b9e-0f3c2d1a6b7e\n")
    assert keeper._look(1) is not None  # the tags could not be set: try again
    assert "could not list the worker tags" in caplog.text


def test_a_fault_in_a_look_never_ends_the_keeping(
    manager: FakeManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "flamenco-worker-credentials.yaml"
    current = _register(manager, credentials, "awake")
    stale = manager.add_worker(NAME, "old", "offline")
    keeper = _keeper(manager, credentials, ())
    real_look, faults = keeper._look, []

    def look(looks: int) -> object:
        if not faults:
            faults.append(looks)
            raise RuntimeError("a bug")
        return real_look(looks)

    keeper._look = look  # type: ignore[method-assign,assignment]
    keeper.start()
    try:
        keeper.worker_started()
        wait_until(lambda: manager.worker(stale).deleted)
    finally:
        keeper.stop()
    assert faults == [1] and manager.worker(current).deleted is False
    assert "looking after the worker's identity failed (RuntimeError at " in caplog.text


def test_under_a_shared_name_only_ids_this_node_held_are_its_own() -> None:
    entries = [
        ManagerWorker("mine-old", NAME, "offline", "3.5", True),
        ManagerWorker("theirs", NAME, "offline", "3.5", True),
        ManagerWorker("theirs-live", NAME, "awake", "3.5", True),
        ManagerWorker("mine", NAME, "awake", "3.5", True),
    ]
    remove, live = duplicates(entries, NAME, "mine", frozenset({"mine-old", "mine"}))
    assert [w.id for w in remove] == ["mine-old"] and live == []
    remove, live = duplicates(entries, NAME, "mine")  # the node's own name
    assert [w.id for w in remove] == ["mine-old", "theirs"] and [w.id for w in live] == [
        "theirs-live"
    ]


def test_the_ids_held_keep_the_newest_and_survive_faults(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = WorkerIds(str(tmp_path / "worker-ids"))
    assert ids.held() == frozenset()
    for n in range(KEEP + 3):
        ids.remember(f"id-{n}")
    lines = (tmp_path / "worker-ids").read_text().split()
    assert lines == [f"id-{n}" for n in range(3, KEEP + 3)]  # the newest, oldest first
    ids.remember("id-5")  # listed already: nothing changes
    ids.remember("id-0")  # held again: the newest now
    lines = (tmp_path / "worker-ids").read_text().split()
    assert len(lines) == KEEP and lines[-1] == "id-0" and "id-3" not in lines
    ids.remember("not\nan id")
    assert "not" not in ids.held()
    # A write that fails (the dir is gone) is logged once; the list is written later.
    gone = WorkerIds(str(tmp_path / "gone" / "worker-ids"))
    gone.remember("a")
    gone.remember("b")
    assert caplog.text.count("cannot record worker id") == 1
    (tmp_path / "gone").mkdir()
    gone.remember("c")
    assert gone.held() == frozenset({"c"})
