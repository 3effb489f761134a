"""The Flamenco v3 Manager's worker-management API (the web interface's; no worker
credentials needed): list workers, fetch one, request a status change, delete one,
list tags, set a worker's tags.

Every call is made through the worker's proxy (``ManagerApi.proxies``), logs what
went wrong in a line an operator can act on, and returns None or False instead of
raising: a Manager that is down or refuses must never stop the agent. Nothing
secret passes through here (the API has no secrets; worker ids are not secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

import requests

from node_agent.common.log import get_logger
from node_agent.manager.transport import PROBE_TIMEOUT, manager_session, proxies_for, reason

log = get_logger("manager_api")

MGT = "/api/v3/worker-mgt"
T = TypeVar("T")


@dataclass(frozen=True)
class ManagerApi:
    """Where the Manager is and how to reach it."""

    url: str
    proxies: Mapping[str, str] = field(default_factory=dict)
    timeout: float = PROBE_TIMEOUT  # seconds for one call

    @classmethod
    def for_worker(
        cls, url: str, worker_env: Mapping[str, str], timeout: float = PROBE_TIMEOUT
    ) -> ManagerApi:
        """The Manager at ``url``, through the proxy the worker uses with its
        environment ``worker_env``."""
        return cls(url, proxies_for(url, worker_env), timeout)


@dataclass(frozen=True)
class WorkerTag:
    """A worker tag on the Manager."""

    id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class ManagerWorker:
    """A worker as the Manager lists it (``tags`` only from ``get_worker``)."""

    id: str
    name: str
    status: str  # "" for a worker that registered but never signed on
    version: str
    can_restart: bool
    requested: Optional[str] = None  # a pending status change request
    lazy: bool = False  # whether that request lets the current task finish
    tags: tuple[WorkerTag, ...] = ()
    last_seen: Optional[str] = None  # RFC 3339, as the Manager sends it

    @classmethod
    def parse(cls, document: Any) -> ManagerWorker:
        """From a ``WorkerSummary`` or ``Worker`` document; ``ValueError`` when it is
        not one."""
        if not isinstance(document, dict) or not isinstance(document.get("id"), str):
            raise ValueError("not a worker document")
        change = document.get("status_change")
        change = change if isinstance(change, dict) else {}
        requested = change.get("status")
        return cls(
            id=document["id"],
            name=str(document.get("name", "")),
            status=str(document.get("status", "")),
            version=str(document.get("version", "")),
            can_restart=bool(document.get("can_restart")),
            requested=str(requested) if requested else None,
            lazy=bool(change.get("is_lazy")),
            tags=tuple(_tag(t) for t in _items(document, "tags")),
            last_seen=str(document["last_seen"]) if document.get("last_seen") else None,
        )


def _items(document: dict[str, Any], key: str) -> list[Any]:
    """The list under ``key`` (none when absent or null); ``ValueError`` when it is
    something else."""
    items = document.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"{key} is not a list")
    return items


def _tag(document: Any) -> WorkerTag:
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        raise ValueError("not a worker tag document")
    name, description = document.get("name", ""), document.get("description") or ""
    return WorkerTag(document["id"], str(name), str(description))


def _message(response: requests.Response) -> str:
    """``HTTP 404: worker "..." not found``, from the Manager's ``{"code",
    "message"}`` error body when it has one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {response.status_code}" + (f": {detail}" if detail else "")


def _call(
    api: ManagerApi,
    method: str,
    path: str,
    what: str,
    *,
    body: Any = None,
    accept: tuple[int, ...] = (200, 204),
) -> Optional[requests.Response]:
    """One request; the response when its status is in ``accept``, else None after a
    warning ``could not <what>: <why>``."""
    url = api.url.rstrip("/") + path
    try:
        with manager_session(api.proxies) as session:
            response = session.request(method, url, json=body, timeout=api.timeout)
    except requests.RequestException as exc:
        log.warning("could not %s: Manager %s: %s", what, api.url, reason(exc))
        return None
    if response.status_code not in accept:
        log.warning("could not %s: Manager %s: %s", what, api.url, _message(response))
        return None
    return response


def _get(api: ManagerApi, path: str, what: str, parse: Callable[[Any], T]) -> Optional[T]:
    """``GET path`` and its answer through ``parse``; None after a warning when the
    request failed, or the answer is not JSON or not what ``parse`` takes (it
    raises ``ValueError``)."""
    response = _call(api, "GET", path, what, accept=(200,))
    if response is None:
        return None
    try:
        document = response.json()
    except ValueError:
        log.warning("could not %s: the Manager's answer is not JSON", what)
        return None
    try:
        return parse(document)
    except (TypeError, ValueError):  # TypeError: a caller's parse that assumed a shape
        log.warning("could not %s: unexpected answer from the Manager", what)
        return None


def get_list(
    api: ManagerApi, path: str, key: str, parse: Callable[[Any], T], what: str
) -> Optional[list[T]]:
    """``GET path`` and parse each item of the answer's ``key`` list; None on failure."""

    def each(document: Any) -> list[T]:
        if not isinstance(document, dict):
            raise ValueError("not an object")
        return [parse(item) for item in _items(document, key)]

    return _get(api, path, what, each)


def list_workers(api: ManagerApi) -> Optional[list[ManagerWorker]]:
    """Every worker the Manager lists (``GET /worker-mgt/workers``); None on failure."""
    return get_list(api, f"{MGT}/workers", "workers", ManagerWorker.parse, "list the workers")


def get_worker(api: ManagerApi, worker_id: str) -> Optional[ManagerWorker]:
    """One worker with its tags (``GET /worker-mgt/workers/{id}``); None when it is
    unknown (404) or on failure."""
    what = f"fetch worker {worker_id}"
    return _get(api, f"{MGT}/workers/{worker_id}", what, ManagerWorker.parse)


def set_status(api: ManagerApi, worker_id: str, status: str, lazy: bool) -> bool:
    """Ask a worker to go to ``status`` (``POST .../setstatus``); with ``lazy`` it
    finishes its current task first and gets no new one. A worker's own status
    cancels a pending request; ``restart`` for a worker that cannot restart is
    refused (HTTP 412). True when the Manager accepted it."""
    done = _call(
        api,
        "POST",
        f"{MGT}/workers/{worker_id}/setstatus",
        f"ask worker {worker_id} to go {status}{' lazily' if lazy else ''}",
        body={"status": status, "is_lazy": lazy},
        accept=(204,),
    )
    if done is not None:
        log.info(
            "asked worker %s to go %s%s",
            worker_id,
            status,
            " once its current task is done" if lazy else "",
        )
    return done is not None


def delete_worker(api: ManagerApi, worker_id: str, why: str) -> bool:
    """Remove a worker's entry (``DELETE .../workers/{id}``; the Manager requeues its
    tasks); ``why`` goes into the log line. True when it is gone (404: already)."""
    response = _call(
        api,
        "DELETE",
        f"{MGT}/workers/{worker_id}",
        f"remove worker {worker_id} from the Manager",
        accept=(200, 204, 404),
    )
    if response is None:
        return False
    log.info(
        "removed worker %s from the Manager (HTTP %d): %s", worker_id, response.status_code, why
    )
    return True


def list_tags(api: ManagerApi) -> Optional[list[WorkerTag]]:
    """The Manager's worker tags (``GET /worker-mgt/tags``); None on failure."""
    return get_list(api, f"{MGT}/tags", "tags", _tag, "list the worker tags")


def set_tags(api: ManagerApi, worker_id: str, tag_ids: list[str]) -> bool:
    """Make these tags (ids) the worker's only tags (``POST .../settags``); True when
    the Manager accepted it."""
    done = _call(
        api,
        "POST",
        f"{MGT}/workers/{worker_id}/settags",
        f"set the tags of worker {worker_id}",
        body={"tag_ids": tag_ids},
        accept=(204,),
    )
    return done is not None
