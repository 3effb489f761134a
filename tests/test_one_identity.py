"""The real agent with the stand-in v3 worker (packaging/standin-worker) against the
faithful stand-in Manager: one entry per node, tagged, whatever happened to its
credentials; the worker's environment and config."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable

import yaml

from node_agent.manager.api import ManagerApi, delete_worker
from node_agent.sim.standins.manager import FakeManager
from tests.agent import Agent
from tests.helpers import wait_until
from tests.nodes import TestNode, make_node, write_executable

Start = Callable[..., Agent]
WORKER = Path(__file__).resolve().parent.parent / "packaging" / "standin-worker" / "flamenco-worker"
NAME = "spot-render-v3-0f6a1c2e9d8b"  # the default name on the newer_spot fixture
STANDIN = {"FLAMENCO_STANDIN_TIME_SCALE": "0.05"}  # the stand-in worker's own waits


def _node(root: Path) -> TestNode:
    """A v3 node whose flamenco-worker package holds the stand-in v3 worker."""
    node = make_node(root, "newer_spot")
    launcher = f'#!/bin/sh\nexec "{sys.executable}" "{WORKER}" "$@"\n'
    write_executable(node.package_dir("flamenco-worker") / "flamenco-worker", launcher)
    return node


def _credentials(node: TestNode) -> Path:
    return node.shared / ".node-agent/worker/home/flamenco-worker-credentials.yaml"


def _current(node: TestNode) -> str:
    return str(yaml.safe_load(_credentials(node).read_text())["worker_id"])


def _only_entry(manager: FakeManager, node: TestNode, tag: str) -> str:
    """Waits until the Manager lists exactly one entry with the node's name: the
    current credentials', awake and tagged. Its id."""

    def settled() -> bool:
        entries = manager.named(NAME)
        return (
            _credentials(node).exists()
            and [w.id for w in entries] == [_current(node)]
            and entries[0].status == "awake"
            and entries[0].tag_ids == [tag]
        )

    wait_until(settled, 30, "one awake, tagged entry for the node")
    return _current(node)


def test_registered_tagged_and_re_registered_after_deletion(
    tmp_path: Path, run_agent: Start
) -> None:
    manager = FakeManager().start()
    gpu = manager.add_tag("Cycles GPU")
    stale = manager.add_worker(NAME, "lost-with-the-disk", "offline")  # a former life
    other = manager.add_worker("spot-render-v3-111111111111", "theirs", "offline")
    node = _node(tmp_path / "node")
    agent = run_agent(
        "", node=node, manager=manager, FLAMENCO_WORKER_TAGS="Cycles GPU, NVMe", **STANDIN
    )
    first = _only_entry(manager, node, gpu)
    assert manager.worker(stale).deleted and not manager.worker(other).deleted
    # Logged once the Manager has answered the DELETE: wait for the line.
    wait_until(lambda: f"removed worker {stale} from the Manager".encode() in agent.stderr)
    assert agent.stderr.count(b"the Manager has no tag 'NVMe'") == 1
    # The worker's environment and config.
    pid = agent.state()["worker_pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"NO_COLOR=1" in environ
    config = node.shared / ".node-agent/worker/flamenco-worker.yaml"
    assert yaml.safe_load(config.read_text())["oom_score_adjust"] == 500
    assert b"\x1b" not in agent.stdout and b"manager accepted sign-on" in agent.stdout

    # Deleted on the Manager (soft delete): at its next start the worker's sign-on
    # gets 403, it registers anew under the same name and is tagged again.
    delete_worker(ManagerApi(manager.url), first, "test")
    os.kill(pid, signal.SIGKILL)  # it dies without signing off (OOM, a crash)
    second = _only_entry(manager, node, gpu)
    assert second != first
    assert manager.registered_names() == [NAME, NAME]
    state = agent.state()
    assert state["restarts"] == 1 and not state["crash_loop"]  # no crash loop


def test_a_manager_failing_sign_on_for_a_while_leaves_one_entry(
    tmp_path: Path, run_agent: Start
) -> None:
    manager = FakeManager().start()
    node = _node(tmp_path / "node")
    home = _credentials(node).parent
    home.mkdir(parents=True)
    before = manager.add_worker(NAME, "s3cret", "offline")
    _credentials(node).write_text(f"worker_id: {before}\nworker_secret: s3cret\n")
    manager.fail("sign-on", 500)
    agent = run_agent("", node=node, manager=manager, **STANDIN)
    # Each start: sign-on 500, a new registration, sign-on 500 again: exit 1.
    wait_until(lambda: len(manager.registered_names()) >= 3, 30)
    manager.fail("sign-on", None)
    wait_until(
        lambda: [(w.id, w.status) for w in manager.named(NAME)] == [(_current(node), "awake")],
        30,
        "exactly one entry, the signed-on worker's",
    )
    assert manager.worker(before).deleted
    # The Manager was probed before every start, not only the first.
    starts = agent.state()["restarts"] + 1
    assert len(manager.server.received("GET", "/api/v3/version")) > starts


def test_under_a_name_other_nodes_share_only_this_nodes_entries_are_removed(
    tmp_path: Path, run_agent: Start
) -> None:
    manager = FakeManager().start()
    node = _node(tmp_path / "node")
    _credentials(node).parent.mkdir(parents=True)
    before = manager.add_worker("render", "s3cret", "offline")
    theirs = manager.add_worker("render", "theirs", "offline")  # another node's, stopped
    _credentials(node).write_text(f"worker_id: {before}\nworker_secret: s3cret\n")
    manager.fail("sign-on", 500)
    agent = run_agent("", node=node, manager=manager, FLAMENCO_WORKER_NAME="render", **STANDIN)
    wait_until(lambda: len(manager.registered_names()) >= 2, 30)
    manager.fail("sign-on", None)

    def mine() -> list[tuple[str, str]]:
        return [(w.id, w.status) for w in manager.named("render") if w.id != theirs]

    wait_until(lambda: mine() == [(_current(node), "awake")], 30, "one entry of this node's")
    assert manager.worker(before).deleted and not manager.worker(theirs).deleted
    held = (node.shared / ".node-agent/worker-ids").read_text().split()
    assert held[0] == before and held[-1] == _current(node) and theirs not in held
    # Each removal is logged once the Manager's answer is back: a moment after the
    # Manager saw the delete, so wait for the lines rather than count them at once.
    removed = len(held) - 1

    def removals() -> int:
        return agent.stderr.count(b"removed worker ")

    wait_until(lambda: removals() >= removed, 30, "each removal in the agent's log")
    assert removals() == removed
