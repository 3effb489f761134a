"""The Batch service, through the official ``azure-batch`` SDK (REST API 2025-06-01):
the pool, its nodes, a node's file, resizing, removing exactly some nodes, rebooting
and reimaging. A thin edge: every answer becomes a ``model`` view, every failure a
``BatchFailure`` whose message says what failed and why, with no secret in it.

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
from typing import Any, Optional
from urllib.parse import urlsplit

from azure.batch import BatchClient, models

# 15.1.0 does not export these, and its reboot and reimage fail without them.
from azure.batch.models._models import BatchNodeRebootOptions, BatchNodeReimageOptions
from azure.core.credentials import AzureNamedKeyCredential, TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError

from node_agent.common.errors import InvalidInput, Problem, RuntimeFailure
from node_agent.common.log import hide_secrets
from node_agent.fleet.model import NodeView, PoolView, StartTaskView

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

    def client(self) -> BatchClient:
        """An SDK client signed in with the key, else with Microsoft Entra ID."""
        credential: Any
        if self.key is not None:
            credential = AzureNamedKeyCredential(self.name, self.key)
        else:
            credential = entra_credential()
        return BatchClient(self.url, credential)


def entra_credential() -> TokenCredential:
    """azure-identity's ``DefaultAzureCredential`` (imported here: only an account
    without a key needs it)."""
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415

    return DefaultAzureCredential()


def _text(value: Any, default: str = "") -> str:
    """An SDK enum member (or plain string, the SDK passes unknown values through)
    as its REST value."""
    if value is None:
        return default
    return str(getattr(value, "value", value))


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
def _calling(what: str) -> Iterator[None]:
    """Turn the SDK's exceptions into a ``BatchFailure`` saying ``what`` failed."""
    try:
        yield
    except HttpResponseError as exc:
        if exc.status_code is None:  # a sign-in failure, no HTTP answer
            raise BatchFailure(f"{what}: {_first_line(str(exc.message))}") from None
        code = _code(exc)
        detail = _first_line(exc.error.message) if exc.error and exc.error.message else ""
        raise BatchFailure(
            f"{what}: HTTP {exc.status_code}"
            + (f" {code}" if code else "")
            + (f": {detail}" if detail else "")
        ) from None
    except AzureError as exc:
        raise BatchFailure(f"{what}: {_first_line(str(exc.message))}") from None


def _node(node: models.BatchNode) -> NodeView:
    info = node.start_task_info
    start = StartTaskView()
    if info is not None:
        failure = info.failure_info
        start = StartTaskView(
            state=_text(info.state) or None,
            exit_code=info.exit_code,
            failure=(failure.message or failure.code) if failure is not None else None,
            retries=info.retry_count or 0,
        )
    errors = tuple(f"{e.code}: {e.message}" for e in node.errors or ())
    state = _text(node.state, "unknown")
    return NodeView(str(node.id), bool(node.is_dedicated), state, start, errors)


class BatchService:
    """One pool of one account."""

    def __init__(self, client: BatchClient, pool_id: str) -> None:
        self.client = client
        self.pool_id = pool_id

    def pool(self) -> PoolView:
        """The pool's allocation state and node counts."""
        with _calling(f"get pool {self.pool_id}"):
            pool = self.client.get_pool(self.pool_id)
        return PoolView(
            id=self.pool_id,
            allocation_state=_text(pool.allocation_state, "unknown"),
            target_dedicated=pool.target_dedicated_nodes or 0,
            target_spot=pool.target_low_priority_nodes or 0,
            current_dedicated=pool.current_dedicated_nodes or 0,
            current_spot=pool.current_low_priority_nodes or 0,
            auto_scale=bool(pool.enable_auto_scale),
        )

    def nodes(self) -> list[NodeView]:
        """Every node of the pool (all pages)."""
        with _calling(f"list the nodes of pool {self.pool_id}"):
            return [_node(n) for n in self.client.list_nodes(self.pool_id)]

    def read(self, node_id: str, path: str) -> bytes:
        """A file of a node, by its path relative to the node root."""
        with _calling(f"read {path}"):
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
        with _calling(f"resize pool {self.pool_id}"):
            self.client.begin_resize_pool(self.pool_id, options, polling_interval=POLL)

    def remove(self, node_ids: Sequence[str]) -> None:
        """Remove exactly these nodes (the pool's target drops by them)."""
        for start in range(0, len(node_ids), MAX_REMOVE):
            batch = list(node_ids[start : start + MAX_REMOVE])
            options = models.BatchNodeRemoveOptions(node_ids=batch)
            with _calling(f"remove {len(batch)} node(s) from pool {self.pool_id}"):
                self.client.begin_remove_nodes(self.pool_id, options, polling_interval=POLL)

    def reboot(self, node_id: str) -> None:
        """Reboot a node: its start task runs again, its disk stays."""
        options = BatchNodeRebootOptions(node_reboot_kind="requeue")
        with _calling(f"reboot node {node_id}"):
            self.client.begin_reboot_node(self.pool_id, node_id, options, polling_interval=POLL)

    def reimage(self, node_id: str) -> None:
        """Reimage a node: a new OS disk, packages downloaded again, start task run."""
        options = BatchNodeReimageOptions(node_reimage_option="requeue")
        with _calling(f"reimage node {node_id}"):
            self.client.begin_reimage_node(self.pool_id, node_id, options, polling_interval=POLL)
