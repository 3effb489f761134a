"""Wait until the Flamenco Manager answers, before every worker start.

The wait is ``retry.wait_until_ready`` (full-jitter backoff: a thousand nodes coming
back after a Manager outage must not hammer it); the Manager is reached as
``manager_http`` says, through the worker's proxy. The worker-management calls are
in ``manager_api``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import requests

from node_agent.common.log import get_logger
from node_agent.common.retry import wait_until_ready
from node_agent.manager.api import ManagerApi
from node_agent.manager.transport import manager_session, reason
from node_agent.node.flavour import Flavour

log = get_logger("manager")

STOP_POLL = 0.05  # seconds between looks at a stop request while a probe runs


class ManagerUnavailable(Exception):
    """The Manager did not answer as it should; the message says how."""


@dataclass(frozen=True)
class ManagerCheck:
    """The Manager (``api``: where it is, how to reach it, the time one attempt may
    take), how to tell that it is there, and how long to keep trying."""

    api: ManagerApi
    flavour: Flavour
    cap: float  # seconds: the largest retry window
    deadline: Optional[float]  # seconds; None: never give up


def probe(session: requests.Session, check: ManagerCheck) -> str:
    """One attempt: v3 ``GET /api/v3/version`` must answer 200; for v2 any HTTP answer
    from the base URL will do. Returns what the Manager said; raises
    ``ManagerUnavailable``."""
    base = check.api.url.rstrip("/")
    url = f"{base}/api/v3/version" if check.flavour is not Flavour.V2 else base + "/"
    try:
        response = session.get(url, timeout=check.api.timeout)
    except requests.RequestException as exc:
        raise ManagerUnavailable(reason(exc)) from None
    if check.flavour is Flavour.V2:
        return f"HTTP {response.status_code}"
    if response.status_code != 200:
        raise ManagerUnavailable(f"HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise ManagerUnavailable("HTTP 200 but not JSON: not a Flamenco Manager?") from None
    if not isinstance(document, dict):
        # A captive portal, a proxy's own page, another service at that address.
        raise ManagerUnavailable("HTTP 200 but not a JSON object: not a Flamenco Manager?")
    return f"Flamenco Manager {document.get('version', '?')}"


def wait_for_manager(
    check: ManagerCheck,
    sleep: Callable[[float], None],
    should_stop: Callable[[], bool],
    *,
    on_wait: Optional[Callable[[], None]] = None,
    session: Optional[requests.Session] = None,
) -> str:
    """Poll until the Manager answers (``retry.wait_until_ready``: one log line per
    failed attempt with the time so far and the reason). Raises
    ``ManagerUnavailable`` past the deadline or when ``should_stop`` says so
    (``sleep`` must return early then). ``on_wait`` is called once, when the Manager
    does not answer at once (an attempt failed, or is still going after
    ``STOP_POLL``); ``session``: one to reuse (its connection kept between calls),
    else one of its own."""
    started = time.monotonic()
    waited: list[bool] = []

    def waiting() -> None:
        if not waited and on_wait is not None:
            on_wait()
        waited.append(True)

    with contextlib.ExitStack() as stack:
        used = (
            session
            if session is not None
            else stack.enter_context(manager_session(check.api.proxies))
        )
        answer = wait_until_ready(
            lambda: _unless_stopped(should_stop, waiting, probe, used, check),
            label=f"Manager {check.api.url}",
            not_ready=ManagerUnavailable,
            cap=check.cap,
            sleep=sleep,
            should_stop=should_stop,
            deadline=check.deadline,
            on_wait=waiting,
        )
    log.info(
        "Manager %s answered after %.1f s: %s", check.api.url, time.monotonic() - started, answer
    )
    return answer


def _unless_stopped(
    should_stop: Callable[[], bool],
    slow: Callable[[], None],
    call: Callable[[requests.Session, ManagerCheck], str],
    session: requests.Session,
    check: ManagerCheck,
) -> str:
    """``call`` in a thread of its own, abandoned within ``STOP_POLL`` seconds once
    ``should_stop`` says so: a probe of a Manager behind a firewall that drops
    packets hangs for its whole timeout, and a stop must not wait for that.
    ``slow`` is called each ``STOP_POLL`` the call goes on."""
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = call(session, check)
        except BaseException as exc:  # noqa: BLE001 (raised in the waiting thread)
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="manager-probe", daemon=True).start()
    while not done.wait(STOP_POLL):
        slow()
        if should_stop():
            raise ManagerUnavailable("a stop was requested")
    if "error" in outcome:
        raise outcome["error"]
    answer: str = outcome["answer"]
    return answer
