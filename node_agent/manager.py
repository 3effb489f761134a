"""Talking to the Flamenco Manager: wait until it answers, and how to reach it.

A thousand nodes booting together, or coming back after a Manager outage, must not
hammer it: retries wait a random time in an exponentially growing window, capped
(full jitter, tenacity's ``wait_random_exponential``). The agent reaches the Manager
through the same proxy as the worker does (``proxies_for``): otherwise it could
report the Manager fine while the worker cannot reach it, or the reverse. The
worker-management calls are in ``manager_api``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import requests
import yaml
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from node_agent.flavour import Flavour
from node_agent.log import get_logger

log = get_logger("manager")

PROBE_TIMEOUT = 10.0  # seconds for one attempt
STOP_POLL = 0.05  # seconds between looks at a stop request while a probe runs
FIRST_WINDOW = 1.0  # seconds: the first retry waits up to this long


class ManagerUnavailable(Exception):
    """The Manager did not answer as it should; the message says how."""


@dataclass(frozen=True)
class ManagerCheck:
    """How to tell that the Manager is there, and how long to keep trying."""

    url: str
    flavour: Flavour
    cap: float  # seconds: the largest retry window
    deadline: Optional[float]  # seconds; None: never give up
    timeout: float = PROBE_TIMEOUT  # seconds for one attempt
    proxies: Mapping[str, str] = field(default_factory=dict)  # ``proxies_for`` the URL


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxies_for(url: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy the v3 worker (Go's ``http.ProxyFromEnvironment``) uses for ``url``
    with this environment, as a ``requests`` proxies mapping: ``HTTP_PROXY`` or
    ``HTTPS_PROXY`` by the URL's scheme (upper case first, then lower case), none
    for a loopback host or a host ``NO_PROXY`` names."""

    def variable(name: str) -> str:
        return environ.get(name.upper()) or environ.get(name.lower()) or ""

    parts = urlsplit(url)
    proxy = variable(f"{parts.scheme}_proxy")
    if not proxy or _loopback(parts.hostname or ""):
        return {}
    no_proxy = variable("no_proxy")
    if no_proxy and urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
        parts.netloc, {"no": no_proxy}
    ):
        return {}
    return {parts.scheme: proxy if "://" in proxy else "http://" + proxy}


def manager_session(proxies: Mapping[str, str]) -> requests.Session:
    """A session for the Manager: these proxies and nothing else from the agent's own
    environment (``trust_env`` off, so no ``.netrc`` either)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(proxies)
    return session


def backoff(cap: float) -> wait_random_exponential:
    """The wait between attempts: uniform in [0, min(cap, 2^(n-1)) s]."""
    return wait_random_exponential(multiplier=FIRST_WINDOW, max=cap)


def reason(exc: BaseException) -> str:
    """Why a request failed, in a few words an operator can act on."""
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error ({str(exc.args[0])[:120] if exc.args else exc})"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "connection refused"
        if "Name or service not known" in text or "NameResolutionError" in text:
            return "host name not found"
        return "cannot connect"
    return str(exc) or type(exc).__name__


def probe(session: requests.Session, check: ManagerCheck) -> str:
    """One attempt: v3 ``GET /api/v3/version`` must answer 200; for v2 any HTTP answer
    from the base URL will do. Returns what the Manager said; raises
    ``ManagerUnavailable``."""
    base = check.url.rstrip("/")
    url = f"{base}/api/v3/version" if check.flavour is not Flavour.V2 else base + "/"
    try:
        response = session.get(url, timeout=check.timeout)
    except requests.RequestException as exc:
        raise ManagerUnavailable(reason(exc)) from None
    if check.flavour is Flavour.V2:
        return f"HTTP {response.status_code}"
    if response.status_code != 200:
        raise ManagerUnavailable(f"HTTP {response.status_code}")
    try:
        version = response.json().get("version", "?")
    except ValueError:
        raise ManagerUnavailable("HTTP 200 but not JSON: not a Flamenco Manager?") from None
    return f"Flamenco Manager {version}"


class _StopWhen(stop_base):
    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


def wait_for_manager(
    check: ManagerCheck,
    sleep: Callable[[float], None],
    should_stop: Callable[[], bool],
    *,
    on_wait: Optional[Callable[[], None]] = None,
    session: Optional[requests.Session] = None,
) -> str:
    """Poll until the Manager answers; one log line per failed attempt with the time
    so far and the reason. Raises ``ManagerUnavailable`` past the deadline or when
    ``should_stop`` says so (``sleep`` must return early then). ``on_wait`` is called
    once, when the Manager does not answer at once (an attempt failed, or is still
    going after ``STOP_POLL``); ``session``: one to reuse (its connection kept between
    calls), else one of its own."""
    started = time.monotonic()
    waited: list[bool] = []

    def waiting() -> None:
        if not waited and on_wait is not None:
            on_wait()
        waited.append(True)

    def log_attempt(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        waiting()
        log.warning(
            "Manager %s: attempt %d after %.1f s: %s; next attempt in %.1f s",
            check.url,
            state.attempt_number,
            time.monotonic() - started,
            state.outcome.exception(),
            state.next_action.sleep,
        )

    retrying = Retrying(
        retry=retry_if_exception_type(ManagerUnavailable),
        wait=backoff(check.cap),
        stop=stop_any(
            _StopWhen(should_stop),
            stop_after_delay(check.deadline) if check.deadline else stop_never,
        ),
        sleep=sleep,
        before_sleep=log_attempt,
        reraise=True,
    )
    with contextlib.ExitStack() as stack:
        if session is None:
            session = stack.enter_context(manager_session(check.proxies))
        try:
            answer = retrying(_unless_stopped, should_stop, waiting, probe, session, check)
        except ManagerUnavailable:
            if should_stop():
                log.info(
                    "stopped waiting for the Manager %s after %.1f s",
                    check.url,
                    time.monotonic() - started,
                )
            raise
    log.info("Manager %s answered after %.1f s: %s", check.url, time.monotonic() - started, answer)
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


def worker_id(credentials: Path) -> Optional[str]:
    """The v3 worker's id from its credentials file (never its secret)."""
    try:
        document = yaml.safe_load(credentials.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    value = document.get("worker_id") if isinstance(document, dict) else None
    return str(value) if value else None
