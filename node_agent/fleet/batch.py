"""The Batch service, through the official ``azure-batch`` SDK (REST API 2025-06-01):
the pool, its nodes, a node's file, resizing, removing exactly some nodes, rebooting,
and the pool's package references. A thin edge: every answer becomes a ``model``
view, every failure a ``BatchFailure`` whose message says what failed and why, with
no secret in it; an answer that is not what Batch sends (a proxy's HTML page, a
count that is not a number) is one such failure, never a traceback.

Every call has its own time limits (``Limits``): the SDK's defaults are a read
timeout of 300 s and ten retries, minutes of silence against a service that
accepts connections and never answers.

Credentials: the account key from ``AZURE_BATCH_ACCESS_KEY`` (shared key, as the
Azure CLI reads it), else Microsoft Entra ID through azure-identity's
``DefaultAzureCredential`` (environment, workload or managed identity, Azure CLI
login, ...). HTTPS is verified against the system's certificates, or the bundle
``REQUESTS_CA_BUNDLE`` names.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)

from node_agent.common.errors import InvalidInput, Problem, RuntimeFailure
from node_agent.common.log import hide_secrets
from node_agent.fleet.model import NodeView, PackageRef, PoolView, StartTaskView
from node_agent.fleet.sdk import BatchNodeRebootOptions
from node_agent.fleet.times import seconds

ENDPOINT = "AZURE_BATCH_ENDPOINT"
ACCOUNT = "AZURE_BATCH_ACCOUNT"
KEY = "AZURE_BATCH_ACCESS_KEY"
MAX_REMOVE = 100  # node ids per Remove Nodes request (the API's limit)
MAX_FILE = 1 << 20  # bytes of a state file worth reading
# Seconds between the SDK's checks that an operation finished; fleet never waits
# for one (the next look at the pool shows it), the SDK checks in the background.
POLL = 5


class BatchFailure(RuntimeFailure):
    """A Batch call failed; the message says which and why (never a secret)."""


class NotBatch(ValueError):
    """An answer that is not what Batch sends; the message says what is wrong."""


@dataclass(frozen=True)
class Limits:
    """How long one call to Batch may take: ``timeout`` seconds of silence (at most
    10 to connect), tried ``retries`` more times after a failure that may pass."""

    timeout: float = 30.0
    retries: int = 2

    def client_options(self) -> dict[str, Any]:
        """The SDK client's transport and retry settings."""
        return {
            "connection_timeout": min(10.0, self.timeout),
            "read_timeout": self.timeout,
            "retry_total": self.retries,
            "retry_backoff_max": min(10.0, self.timeout),
            "timeout": self.timeout * (self.retries + 1) + 10 * self.retries,
        }


@dataclass(frozen=True)
class BatchAccount:
    """Where the Batch account is and how to sign in."""

    url: str
    name: str
    key: Optional[str] = field(default=None, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], url: Optional[str]) -> BatchAccount:
        """The account from ``--account-url`` (else ``AZURE_BATCH_ENDPOINT``), its name
        from ``AZURE_BATCH_ACCOUNT`` (else the URL's first label), the key from
        ``AZURE_BATCH_ACCESS_KEY``; ``InvalidInput`` listing every problem."""
        problems = []
        url = (url or environ.get(ENDPOINT) or "").strip()
        parts = urlsplit(url)
        if not url:
            problems.append(
                Problem(ENDPOINT, "not set: give the account URL (--account-url or the variable)")
            )
        elif parts.scheme not in ("https", "http") or not parts.hostname:
            problems.append(
                Problem(
                    "--account-url",
                    f"{url!r} is not a URL like https://ACCOUNT.REGION.batch.azure.com",
                )
            )
        name = environ.get(ACCOUNT) or (parts.hostname or "").split(".")[0]
        key = environ.get(KEY) or None
        if key is not None:
            hide_secrets([key])
            try:
                base64.b64decode(key, validate=True)
            except binascii.Error:
                problems.append(
                    Problem(KEY, "is not a base64 key: copy a key as the portal shows it")
                )
        if problems:
            raise InvalidInput("cannot reach the Batch account", problems)
        return cls(url.rstrip("/"), name, key)

    def client(self, limits: Limits = Limits()) -> BatchClient:
        """An SDK client signed in with the key, else with Microsoft Entra ID."""
        credential: Any
        if self.key is not None:
            credential = AzureNamedKeyCredential(self.name, self.key)
        else:
            credential = entra_credential()
        return BatchClient(self.url, credential, **limits.client_options())


def entra_credential() -> TokenCredential:
    """azure-identity's ``DefaultAzureCredential`` (imported here: only an account
    without a key needs it)."""
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415

    return DefaultAzureCredential()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _code(error: HttpResponseError) -> str:
    """Batch's error code: from the parsed error, else from the body (the SDK does
    not parse the errors of streamed answers such as a file's)."""
    if error.error is not None and error.error.code:
        return str(error.error.code)
    read = getattr(error.response, "read", None)  # a streamed body is not read yet
    try:
        body = json.loads(read()) if callable(read) else None
    except (ValueError, AzureError):
        body = None
    return str(body.get("code") or "") if isinstance(body, dict) else ""


@contextmanager
def _calling(what: str, limits: Limits) -> Iterator[None]:
    """Turn the SDK's exceptions, and answers that are not Batch's, into a
    ``BatchFailure`` saying ``what`` failed."""
    try:
        yield
    except (ServiceResponseTimeoutError, ServiceRequestTimeoutError):
        tries = limits.retries + 1
        raise BatchFailure(
            f"{what}: no answer within {limits.timeout:g} s ({tries} tries; --timeout)"
        ) from None
    except HttpResponseError as exc:
        if exc.status_code is None:  # a sign-in failure, no HTTP answer
            raise BatchFailure(f"{what}: {_first_line(str(exc.message))}") from None
        if exc.status_code < 400:
            raise BatchFailure(f"{what}: {_not_batch(str(exc.message))}") from None
        code = _code(exc)
        detail = _first_line(exc.error.message) if exc.error and exc.error.message else ""
        raise BatchFailure(
            f"{what}: HTTP {exc.status_code}"
            + (f" {code}" if code else "")
            + (f": {detail}" if detail else "")
        ) from None
    except AzureError as exc:
        raise BatchFailure(f"{what}: {_first_line(str(exc.message))}") from None
    except NotBatch as exc:
        raise BatchFailure(f"{what}: {_not_batch(str(exc))}") from None
    except ValueError as exc:  # the SDK's JSON decoding of a body that is not JSON
        raise BatchFailure(f"{what}: {_not_batch(f'not JSON ({exc})')}") from None
    except (TypeError, KeyError, AttributeError) as exc:  # the SDK's paging of odd shapes
        raise BatchFailure(f"{what}: {_not_batch(f'{type(exc).__name__}: {exc}')}") from None


def _not_batch(detail: str) -> str:
    return (
        f"the answer is not what Batch sends ({_first_line(detail)[:200]}); is the account "
        "URL right, or a proxy in the way?"
    )


# -- answers, checked -------------------------------------------------------------


def _plain(value: Any) -> Any:
    """An SDK model (a mapping over the JSON it was given) as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _get(document: Any, key: str, check: Callable[[Any], bool], expected: str) -> Any:
    if not isinstance(document, dict):
        raise NotBatch(f"{json.dumps(document)[:40]} is not an object")
    value = document.get(key)
    if value is not None and not check(value):
        raise NotBatch(f"{key} is {json.dumps(value)[:40]}, not {expected}")
    return value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pool_view(pool_id: str, document: Any) -> PoolView:
    """A ``BatchPool`` document as a ``PoolView``; ``NotBatch`` when it is not one."""
    count = "a count of nodes"
    start = _get(document, "startTask", _is_object, "an object") or {}
    settings = {}
    for item in _get(start, "environmentSettings", _is_list, "a list") or []:
        name = _get(item, "name", _is_text, "text")
        settings[str(name)] = str(_get(item, "value", _is_text, "text") or "")
    references = tuple(
        PackageRef(
            str(_get(r, "applicationId", _is_text, "text") or ""),
            _get(r, "version", _is_text, "text"),
        )
        for r in _get(document, "applicationPackageReferences", _is_list, "a list") or []
    )
    return PoolView(
        id=pool_id,
        allocation_state=_get(document, "allocationState", _is_text, "text") or "unknown",
        target_dedicated=_get(document, "targetDedicatedNodes", _count, count) or 0,
        target_spot=_get(document, "targetLowPriorityNodes", _count, count) or 0,
        current_dedicated=_get(document, "currentDedicatedNodes", _count, count) or 0,
        current_spot=_get(document, "currentLowPriorityNodes", _count, count) or 0,
        auto_scale=bool(_get(document, "enableAutoScale", _is_bool, "true or false")),
        references=references,
        start_command=str(_get(start, "commandLine", _is_text, "text") or ""),
        start_settings=settings,
    )


def node_view(document: Any) -> NodeView:
    """A ``BatchNode`` document as a ``NodeView``; ``NotBatch`` when it is not one."""
    node_id = _get(document, "id", _is_text, "text")
    if not node_id:
        raise NotBatch("a node without an id")
    info = _get(document, "startTaskInfo", _is_object, "an object")
    start = StartTaskView()
    if info is not None:
        failure = _get(info, "failureInfo", _is_object, "an object")
        start = StartTaskView(
            state=_get(info, "state", _is_text, "text") or None,
            exit_code=_get(info, "exitCode", _is_int, "a whole number"),
            failure=(
                (_get(failure, "message", _is_text, "text") or _get(failure, "code", _is_text, ""))
                if failure is not None
                else None
            ),
            retries=_get(info, "retryCount", _count, "a count") or 0,
            started=seconds(_get(info, "startTime", _is_text, "a time")),
        )
    errors = tuple(
        f"{_get(e, 'code', _is_text, 'text')}: {_get(e, 'message', _is_text, 'text')}"
        for e in _get(document, "errors", _is_list, "a list") or []
    )
    return NodeView(
        node_id,
        bool(_get(document, "isDedicated", _is_bool, "true or false")),
        _get(document, "state", _is_text, "text") or "unknown",
        start,
        errors,
        seconds(_get(document, "lastBootTime", _is_text, "a time")),
    )


class BatchService:
    """One pool of one account."""

    def __init__(self, client: BatchClient, pool_id: str, limits: Limits = Limits()) -> None:
        self.client = client
        self.pool_id = pool_id
        self.limits = limits

    def _calling(self, what: str) -> Any:
        return _calling(what, self.limits)

    def pool(self) -> PoolView:
        """The pool: allocation state, node counts, package references, start task."""
        with self._calling(f"get pool {self.pool_id}"):
            return pool_view(self.pool_id, _plain(self.client.get_pool(self.pool_id)))

    def nodes(self) -> list[NodeView]:
        """Every node of the pool (all pages)."""
        with self._calling(f"list the nodes of pool {self.pool_id}"):
            return [node_view(_plain(n)) for n in self.client.list_nodes(self.pool_id)]

    def read(self, node_id: str, path: str) -> bytes:
        """A file of a node, by its path relative to the node root."""
        with self._calling(f"read {path}"):
            data = b""
            for chunk in self.client.download_node_file(self.pool_id, node_id, path):
                data += chunk
                if len(data) > MAX_FILE:
                    raise BatchFailure(f"read {path}: larger than {MAX_FILE} bytes")
            return data

    def resize(self, dedicated: int, spot: int) -> None:
        """Ask Batch for these target counts (it picks nodes to add; fleet never
        shrinks this way: Batch would pick which nodes go)."""
        options = models.BatchPoolResizeOptions(
            target_dedicated_nodes=dedicated, target_low_priority_nodes=spot
        )
        with self._calling(f"resize pool {self.pool_id}"):
            self.client.begin_resize_pool(self.pool_id, options, polling_interval=POLL)

    def remove(self, node_ids: Sequence[str]) -> None:
        """Remove exactly these nodes (the pool's target drops by them)."""
        for start in range(0, len(node_ids), MAX_REMOVE):
            batch = list(node_ids[start : start + MAX_REMOVE])
            options = models.BatchNodeRemoveOptions(node_ids=batch)
            with self._calling(f"remove {len(batch)} node(s) from pool {self.pool_id}"):
                self.client.begin_remove_nodes(self.pool_id, options, polling_interval=POLL)

    def reboot(self, node_id: str) -> None:
        """Reboot a node (Batch allows it for an idle or running node): its start
        task runs again, its disk stays, the pool's packages are deployed again."""
        options = BatchNodeRebootOptions(node_reboot_kind="requeue")
        with self._calling(f"reboot node {node_id}"):
            self.client.begin_reboot_node(self.pool_id, node_id, options, polling_interval=POLL)

    def set_references(self, references: Sequence[PackageRef]) -> None:
        """Replace the pool's package references (Update Pool): nodes get them when
        they join, reboot or are reimaged."""
        pool = models.BatchPoolUpdateOptions(
            application_package_references=[
                models.BatchApplicationPackageReference(
                    application_id=r.application_id, version=r.version
                )
                for r in references
            ]
        )
        with self._calling(f"update the package references of pool {self.pool_id}"):
            self.client.update_pool(self.pool_id, pool)
