"""Scheduled Events: parsing, deciding, and the watcher against the stand-in IMDS."""

from __future__ import annotations

import io
import logging
import select
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from node_agent.imds.client import API_EVENTS, Closed, ImdsClient, SocketReader, read_answer
from node_agent.imds.events import Reaction, ScheduledEvent, due, parse_events
from node_agent.imds.watcher import EventWatcher
from node_agent.sim.standins.imds import EVENTS_PATH, FakeImds
from tests.helpers import wait_until
from tests.nodes import CLOSED_LOOPBACK


def test_parse_events() -> None:
    document = {
        "DocumentIncarnation": 3,
        "Events": [
            {"EventId": "A", "EventType": "Preempt", "Resources": ["vm1"], "NotBefore": ""},
            {
                "EventId": "B",
                "EventType": "Reboot",
                "Resources": ["vm1", "vm2"],
                "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
            },
        ],
    }
    a, b = parse_events(document)
    assert (a.event_id, a.reaction, a.not_before) == ("A", Reaction.STOP, None)
    assert b.resources == ("vm1", "vm2") and b.not_before == 1474309787.0
    assert parse_events({"Events": []}) == []


@pytest.mark.parametrize("document", [[], {"Events": None}, {"Event": []}, "Events"])
def test_parse_events_rejects_what_is_no_events_document(document: object) -> None:
    with pytest.raises(ValueError):
        parse_events(document)


def test_one_bad_event_never_hides_another() -> None:
    preempt = {"EventId": "P-1", "EventType": "Preempt", "Resources": ["vm1"]}
    document = {
        "Events": [
            "not an event",
            {"EventId": "X", "EventType": "Reboot"},  # whose? nobody can tell
            {"EventType": "Preempt", "Resources": ["vm2"], "NotBefore": 7},
            {"EventId": "R-1", "EventType": "Reboot", "Resources": "vm1", "NotBefore": "soon"},
            preempt,
        ]
    }
    other, reboot, mine = parse_events(document)
    assert (mine.event_id, mine.problems, mine.acknowledgeable) == ("P-1", (), True)
    assert other.event_id == "(no EventId: Preempt)" and not other.acknowledgeable
    assert other.problems == (
        "no EventId (None): it cannot be acknowledged",
        "unreadable NotBefore '7': taken as now",
    )
    # A single resource given as a string is that resource, not its letters; an
    # unreadable NotBefore is now.
    assert reboot.resources == ("vm1",) and reboot.not_before is None
    assert due(reboot, 0.0, 60.0)


def _event(kind: str, not_before: float | None = None) -> ScheduledEvent:
    return ScheduledEvent("E", kind, ("vm",), not_before)


def test_when_each_event_stops_the_worker() -> None:
    now = 1000.0
    assert due(_event("Preempt"), now, 45)
    assert due(_event("Preempt", now + 30), now, 45)  # a Spot eviction's notice
    assert not due(_event("Terminate", now + 600), now, 45)  # wound down first
    assert not due(_event("Reboot", now + 600), now, 45)
    assert due(_event("Reboot", now + 40), now, 45)
    assert due(_event("Redeploy"), now, 45)  # started: no NotBefore any more
    assert not due(_event("Freeze"), now, 45)
    assert not due(_event("SomethingNew"), now, 45)


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds(vm_name="vm-1").start()
    yield fake
    fake.stop()


def _watch(url: str, timeout: float = 2.0) -> tuple[EventWatcher, list[ScheduledEvent]]:
    """A watcher polling fast; and every event of this VM it has passed on."""
    seen: list[ScheduledEvent] = []

    def react(events: list[ScheduledEvent] | None, now: float) -> None:
        seen.extend(e for e in events or () if e not in seen)

    watcher = EventWatcher(url, react, poll=0.02, timeout=timeout, backoff_cap=0.1).start()
    return watcher, seen


def test_the_stand_in_insists_on_the_metadata_header(imds: FakeImds) -> None:
    assert requests.get(imds.url + EVENTS_PATH, timeout=5).status_code == 400
    answer = requests.get(imds.url + EVENTS_PATH, headers={"Metadata": "true"}, timeout=5)
    assert answer.json()["Events"] == []


def test_only_this_vms_events_are_passed_on_and_acknowledged(imds: FakeImds) -> None:
    watcher, seen = _watch(imds.url)
    try:
        wait_until(lambda: watcher.vm_name == "vm-1")
        imds.schedule("Freeze", "F-1")
        imds.schedule("Preempt", "OTHER", resources=["vm-2"])
        wait_until(lambda: len(imds.server.received("GET", EVENTS_PATH)) >= 5)
        assert [e.event_id for e in seen] == ["F-1"]
        imds.schedule("Preempt", "P-1", source="User")
        event = wait_until(lambda: next((e for e in seen if e.event_id == "P-1"), None))
        assert (event.event_type, event.source, event.status) == ("Preempt", "User", "Scheduled")
        assert watcher.client.acknowledge(event.event_id, event.event_type)
        assert imds.acknowledged() == ["P-1"]
        # Acknowledged, the event starts: its NotBefore is gone.
        wait_until(lambda: any(e.event_id == "P-1" and e.status == "Started" for e in seen))
    finally:
        watcher.stop()


def test_this_vms_event_read_in_part_is_passed_on_and_its_faults_logged(
    imds: FakeImds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    watcher, seen = _watch(imds.url)
    try:
        wait_until(lambda: watcher.vm_name == "vm-1")
        imds.schedule("Reboot", "OTHER", resources=["vm-2"])
        imds.change("OTHER", EventId=None, NotBefore="whenever")
        imds.schedule("Reboot", "R-1")
        imds.change("R-1", NotBefore="Mon, 99 Sep 2016 18:29:47 GMT")
        [event] = wait_until(lambda: seen)
        assert (event.event_id, event.not_before) == ("R-1", None)
        wait_until(lambda: len(imds.server.received("GET", EVENTS_PATH)) >= 5)
    finally:
        watcher.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "scheduled event R-1 for this VM: unreadable NotBefore "
        "'Mon, 99 Sep 2016 18:29:47 GMT': taken as now"
    ]


def test_a_fault_in_the_reaction_never_ends_the_watching(
    imds: FakeImds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    calls: list[list[ScheduledEvent]] = []

    def react(events: list[ScheduledEvent] | None, now: float) -> None:
        if events is None:
            return
        calls.append(events)
        if len(calls) <= 3:
            raise KeyError("a bug")

    watcher = EventWatcher(imds.url, react, poll=0.02, timeout=2.0, backoff_cap=0.1).start()
    try:
        wait_until(lambda: len(calls) >= 3)
        imds.schedule("Preempt", "P-1")
        wait_until(lambda: any(events for events in calls[3:]))
    finally:
        watcher.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "reacting to Scheduled Events failed (KeyError at " in errors[0]


def test_every_failure_kind_is_logged_once_and_watching_goes_on(
    imds: FakeImds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    watcher, seen = _watch(imds.url, timeout=0.2)
    try:
        wait_until(lambda: watcher.vm_name == "vm-1")
        for mode, kind in (
            ("400", "HTTP 400"),
            ("429", "HTTP 429"),
            ("500", "HTTP 500"),
            ("garbage", "invalid JSON"),
            ("hang", "timeout"),
        ):
            imds.fail(mode)
            count = len(imds.server.requests)
            # Two failed polls of this kind.
            wait_until(lambda count=count: len(imds.server.requests) >= count + 2, 60)
            wait_until(lambda kind=kind: any(kind in r.getMessage() for r in caplog.records))
        imds.fail(None)
        imds.schedule("Terminate", "T-1")
        [event] = wait_until(lambda: seen, 90)
        assert event.event_id == "T-1"
    finally:
        watcher.stop()
    messages = [r.getMessage() for r in caplog.records]
    for kind in ("HTTP 400", "HTTP 429", "HTTP 500", "invalid JSON", "timeout"):
        assert sum(kind in m for m in messages) == 1, (kind, messages)


def test_off_azure_the_watcher_stays_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "node_agent")
    watcher, seen = _watch(CLOSED_LOOPBACK)
    try:
        wait_until(lambda: watcher.failures >= 3)
    finally:
        watcher.stop()
    [record] = caplog.records
    assert "no Instance Metadata Service" in record.getMessage()
    assert "not on Azure?" in record.getMessage()
    assert seen == []


@pytest.mark.parametrize(
    "wire, answer",
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
            b'{"Events":[]}NEXT',
            (200, b'{"Events":[]}', True),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5;x=y\r\n{"Eve\r\n8\r\nnts":[]}\r\n0\r\nTrailer: 1\r\n\r\nNEXT',
            (200, b'{"Events":[]}', True),
        ),
        (b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nboom", (500, b"boom", False)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", False)),
        (
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}",
            (200, b"{}", True),
        ),
    ],
)
def test_an_answer_is_read_to_its_last_byte_and_no_further(wire: bytes, answer: tuple) -> None:
    reader = io.BytesIO(wire)
    assert read_answer(reader) == answer
    assert reader.read() in (b"NEXT", b"")


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"", Closed),
        (b"HTTP/1.1 200 OK\r\nContent-Len", Closed),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", Closed),
        (b"<html>not http</html>\r\n", ValueError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", ValueError),
    ],
)
def test_what_is_not_a_whole_answer_is_refused(wire: bytes, error: type) -> None:
    with pytest.raises(error):
        read_answer(io.BytesIO(wire))


def test_an_answer_that_comes_in_pieces_is_read_whole() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = SocketReader(ours)
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
        threading.Timer(0.05, theirs.sendall, [b"ngth: 2\r\n\r\n{}"]).start()
        assert read_answer(reader) == (200, b"{}", True)
        assert reader.fills >= 2 and reader.buffer == b""


def test_a_connection_the_service_closes_while_idle_is_asked_anew() -> None:
    # One answer per connection, then closed without a word (as a keep-alive
    # timeout does): the pipelined request finds it closed and is asked again.
    listener = socket.create_server(("127.0.0.1", 0))
    answers = [b'{"Events": [], "n": %d}' % n for n in range(3)]

    def serve() -> None:
        for body in answers:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                connection.sendall(body)

    threading.Thread(target=serve, daemon=True).start()
    client = ImdsClient(f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        assert client.get(API_EVENTS)["n"] == 0
        client.send(API_EVENTS)
        wait_until(lambda: select.select([client._socket], [], [], 0)[0])  # closed by now
        assert client.receive()["n"] == 1
        assert client.get(API_EVENTS)["n"] == 2
    finally:
        client.close()
        listener.close()
