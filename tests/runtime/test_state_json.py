"""The state file's JSON: one time format (RFC 3339 UTC text), schema 2, and the
schema 1 documents (Unix seconds) that nodes running older packages still write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from node_agent.runtime.state import (
    STATE_SCHEMA,
    TIME_FIELDS,
    AgentState,
    StateProblem,
    parse_state,
    utc_seconds,
    utc_text,
    write_state,
)

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _state() -> AgentState:
    return AgentState(
        agent_pid=123,
        agent_create_time=1_700_000_000.123456789,
        phase="backing-off",
        started_at=1_700_000_001.5,
        flavour="v3",
        worker_name="w",
        worker_executable="/x",
        worker_dir="/w",
        config_path="/w/c",
        worker_started_at=1_700_000_002.0,
        next_start_at=1_700_000_060.25,
        last_exit_code=1,
        last_exit_reason="failed",
        last_exit_at=1_700_000_030.999999,
    )


def test_every_time_in_the_file_is_rfc3339_utc_text(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    written = write_state(str(path), _state())
    document = json.loads(path.read_text())
    assert document["schema"] == STATE_SCHEMA == 2
    assert {
        "agent_create_time",
        "started_at",
        "worker_create_time",
        "worker_started_at",
        "next_start_at",
        "last_exit_at",
        "updated_at",
    } == TIME_FIELDS
    for name in TIME_FIELDS - {"worker_create_time"}:
        assert RFC3339_UTC.fullmatch(document[name]), (name, document[name])
    assert document["worker_create_time"] is None  # no worker: null, as before
    assert document["started_at"] == "2023-11-14T22:13:21.500000Z"
    assert not any(isinstance(v, float) for v in document.values())
    assert parse_state(path.read_bytes()) == written  # to the microsecond, both ways


def test_times_keep_the_microseconds_a_pid_check_needs() -> None:
    for when in (0.0, 1.0, 1_700_000_000.123456789, 1_700_000_000.9999996, 4_102_444_800.000001):
        text = utc_text(when)
        assert RFC3339_UTC.fullmatch(text), text
        assert abs(utc_seconds(text) - when) <= 0.5e-6
        assert utc_text(utc_seconds(text)) == text
    assert utc_text(0.0) == "1970-01-01T00:00:00.000000Z"
    assert utc_seconds("2023-11-14T22:13:20Z") == 1_700_000_000.0  # fewer digits: still RFC 3339


def test_a_schema_1_document_from_an_older_node_still_reads() -> None:
    state = _state()
    old = {"schema": 1, **{k: v for k, v in state.to_json().items() if k != "schema"}}
    for name in TIME_FIELDS:
        value = getattr(state, name)
        old[name] = value
    assert parse_state(json.dumps(old).encode()) == state
    old["started_at"] = "2023-11-14T22:13:21.500000Z"  # schema 1 held numbers only
    with pytest.raises(StateProblem, match="started_at: expected a number of seconds"):
        parse_state(json.dumps(old).encode())


def test_times_that_are_not_utc_rfc3339_are_refused() -> None:
    document = _state().to_json()
    for bad in ("2023-11-14 22:13:21Z", "2023-11-14T22:13:21+01:00", "2023-11-14T22:13:21", 5):
        text = json.dumps({**document, "started_at": bad}).encode()
        with pytest.raises(StateProblem, match="started_at: expected an RFC 3339 UTC time"):
            parse_state(text)
