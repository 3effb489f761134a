"""The state file is advice: every field checked, every bad one named, nothing
raised but ``StateProblem``; real files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from node_agent.runtime.state import (
    MAX_STATE_BYTES,
    AgentState,
    StateProblem,
    own_create_time,
    process_alive,
    read_state,
    write_state,
)


def _state() -> AgentState:
    return AgentState(
        agent_pid=os.getpid(),
        agent_create_time=own_create_time(),
        phase="running",
        started_at=1.0,
        flavour="v3",
        worker_name="w",
        worker_executable="/x",
        worker_dir="/w",
        config_path="/w/c",
    )


def test_state_round_trip_and_liveness(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    assert read_state(path) is None
    written = write_state(path, _state())
    assert written.updated_at > 0
    assert read_state(path) == written
    assert process_alive(written.agent_pid, written.agent_create_time)
    assert not process_alive(written.agent_pid, written.agent_create_time - 5)  # reused pid
    assert not process_alive(None, None)
    Path(path).write_text("{not json")
    with pytest.raises(StateProblem, match="is not valid JSON"):
        read_state(path)


def _good() -> dict[str, Any]:
    return _state().to_json()


@pytest.mark.parametrize(
    "document, named",
    [
        (None, "holds null, not a state"),
        ([1, 2], "holds [1, 2], not a state"),
        ("running", 'holds "running", not a state'),
        ({"agent_pid": -1}, "agent_pid: expected a process id, found -1"),
        ({"agent_pid": "abc"}, 'agent_pid: expected a process id, found "abc"'),
        ({"agent_pid": True}, "agent_pid: expected a process id, found true"),
        ({"started_at": "yesterday"}, "started_at: expected an RFC 3339 UTC time"),
        ({"started_at": 5.0}, "started_at: expected an RFC 3339 UTC time"),
        ({"schema": 1, "started_at": -5}, "started_at: expected a number of seconds"),
        ({"worker_pid": 0}, "worker_pid: expected a process id, found 0"),
        ({"worker_token": ""}, "worker_token: expected a non-empty token, found <redacted>"),
        ({"restarts": 1.5}, "restarts: expected a whole number, 0 or more, found 1.5"),
        ({"crash_loop": "yes"}, 'crash_loop: expected true or false, found "yes"'),
        ({"phase": None}, "phase: expected text, found null"),
        ({"schema": 7}, "schema: expected 1 or 2, found 7"),
    ],
)
def test_a_state_of_the_wrong_shape_names_every_bad_field(
    tmp_path: Path, document: Any, named: str
) -> None:
    path = tmp_path / "state.json"
    if isinstance(document, dict):
        document = {**_good(), **document}
    path.write_text(json.dumps(document))
    with pytest.raises(StateProblem, match=re.escape(named)):
        read_state(str(path))


def test_every_bad_field_at_once_and_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    document = {**_good(), "agent_pid": "abc", "restarts": -1}
    del document["phase"]
    path.write_text(json.dumps(document))
    with pytest.raises(StateProblem) as caught:
        read_state(str(path))
    assert str(caught.value).startswith("does not hold a valid state: ")
    for field in ("agent_pid: expected", "restarts: expected", "phase: missing"):
        assert field in str(caught.value)


def test_files_that_are_no_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{not json")
    with pytest.raises(StateProblem, match="is not valid JSON"):
        read_state(str(path))
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(StateProblem, match="is not valid JSON"):
        read_state(str(path))
    path.write_bytes(b" " * (MAX_STATE_BYTES + 1))
    with pytest.raises(StateProblem, match="larger than 1024 KiB"):
        read_state(str(path))
    path.unlink()
    path.mkdir()
    with pytest.raises(StateProblem, match="cannot be read: Is a directory"):
        read_state(str(path))


def test_no_state_file_is_none_and_a_good_one_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read_state(str(path)) is None
    os.mkfifo(path)  # never read: it would block
    with pytest.raises(StateProblem, match="some other non-file"):
        read_state(str(path))
    path.unlink()
    assert read_state(str(tmp_path / ("x" * 300) / "state.json")) is None  # ENAMETOOLONG
    written = write_state(str(path), AgentState(**dataclasses.asdict(_state())))
    assert read_state(str(path)) == written
