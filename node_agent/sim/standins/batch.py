"""A stand-in Azure Batch service on 127.0.0.1 that the real ``azure-batch`` SDK talks
to: the data-plane REST API (2025-06-01) for the operations ``node-agent fleet``
uses, over the ``Account`` of ``standins.batch_pool``.

Shapes follow Microsoft's REST specification (``specification/batch/data-plane``,
2025-06-01, and its examples): ``GET /pools/{id}`` (a ``BatchPool``), ``PATCH
/pools/{id}`` (200), ``POST .../resize`` and ``.../removenodes`` (202), ``GET
/pools/{id}/nodes`` (``value`` and
``odata.nextLink`` pages, ``maxresults``), ``GET .../nodes/{id}`` (the SDK's reboot
and reimage pollers read it), ``POST .../reboot`` and ``.../reimage`` (202), and
``GET .../files/{path}`` (the bytes, ``ocp-*`` file headers). Every request needs
``api-version=2025-06-01`` and is authenticated as Batch does: shared key (an
HMAC-SHA256 of the documented string to sign, checked with the account key, the
request's ``ocp-date`` within 15 minutes) or, when a ``token`` is given, a Microsoft
Entra bearer token. Errors are Batch's ``{"code", "message": {"lang", "value"},
"values"}`` documents. Every request is recorded.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import os
import re
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from node_agent.sim.standins.batch_pool import (
    Account,
    Application,
    BatchRefusal,
    ComputeNode,
    Pool,
    StartTaskInfo,
    iso,
    new_node_id,
)
from node_agent.sim.standins.server import Request, Response, StandinServer

API_VERSION = "2025-06-01"
JSON = "application/json;odata=minimalmetadata"
PAGE = 1000  # nodes per page, the most ``maxresults`` may ask for
SKEW = 15 * 60  # seconds a request's ocp-date may be off
# The standard headers in Batch's string to sign, in order.
SIGNED = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
_POOL = re.compile(r"/pools/([^/]+)(/resize|/removenodes|/nodes)?")
_NODE = re.compile(r"/pools/([^/]+)/nodes/([^/]+)(/reboot|/reimage|/files/.+)?")


def string_to_sign(request: Request, account: str) -> str:
    """What a shared-key signature covers (Microsoft's "Authenticate requests to
    Azure Batch"): the verb, the standard headers, the ``ocp-*`` headers, the
    account and path, the query parameters."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    parts = urlsplit(request.path)
    lines = [request.method, *(headers.get(name, "") for name in SIGNED)]
    canonical = "".join(
        f"{name}:{headers[name]}\n" for name in sorted(headers) if name.startswith("ocp-")
    )
    resource = f"/{account}{parts.path}"
    query = parse_qs(parts.query)
    resource += "".join(f"\n{name.lower()}:{query[name][0]}" for name in sorted(query))
    return "\n".join(lines) + "\n" + canonical + resource


def sign(key: str, text: str) -> str:
    """The base64 HMAC-SHA256 of ``text`` with the (base64) account key."""
    mac = hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _error(
    status: int, code: str, message: str, details: Optional[dict[str, str]] = None
) -> Response:
    request_id = str(uuid.uuid4())
    body: dict[str, Any] = {
        "odata.metadata": "https://batch.invalid/$metadata#Microsoft.Azure.Batch.Protocol."
        "Entities.Container.errors/@Element",
        "code": code,
        "message": {
            "lang": "en-US",
            "value": f"{message}\nRequestId:{request_id}\nTime:{iso(time.time())}",
        },
    }
    if details:
        body["values"] = [{"key": k, "value": v} for k, v in details.items()]
    return Response(status, body, (("request-id", request_id),), JSON)


class FakeBatch:
    """A Batch account on 127.0.0.1 (``url``) with the key ``key``; ``account``
    holds its pools. ``tls``: serve HTTPS (needed for bearer tokens, which the SDK
    sends only over TLS) and accept ``token``."""

    def __init__(
        self,
        account: str = "flamenco",
        *,
        key: Optional[str] = None,
        token: Optional[str] = None,
        tls: Optional[ssl.SSLContext] = None,
        settle_after: float = 0.0,
        port: int = 0,
    ) -> None:
        self.name = account
        self.key = key or base64.b64encode(os.urandom(64)).decode()
        self.token = token
        self.account = Account(settle_after)
        self.lock = threading.RLock()
        self.server = StandinServer(self._handle, port, tls)

    @property
    def url(self) -> str:
        """The account URL (``AZURE_BATCH_ENDPOINT``)."""
        return self.server.url

    def start(self) -> FakeBatch:
        """Serve in the background."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()

    # -- for tests and the simulated pool -------------------------------------------

    def add_pool(self, pool_id: str, **properties: Any) -> Pool:
        """An empty steady pool (``properties``: ``Pool`` fields, such as
        ``references`` or ``start_task``)."""
        with self.lock:
            pool = self.account.pools[pool_id] = Pool(pool_id, **properties)
            return pool

    def add_application(
        self, name: str, versions: dict[str, Optional[Path]], default: Optional[str] = None
    ) -> Application:
        """An application with these package versions (as the Batch management API
        uploads them); ``default`` is its default version."""
        with self.lock:
            application = self.account.applications[name] = Application(name, versions, default)
            return application

    def set_default_version(self, name: str, version: str) -> None:
        """Make ``version`` the application's default, as an operator does in the
        portal (``az batch application set --default-version``)."""
        with self.lock:
            application = self.account.applications[name]
            assert version in application.versions, version
            application.default_version = version

    def add_node(
        self,
        pool_id: str,
        *,
        dedicated: bool = False,
        state: str = "idle",
        root: Optional[Path] = None,
        start_task: Optional[StartTaskInfo] = None,
        node_id: Optional[str] = None,
    ) -> ComputeNode:
        """A node in a steady pool (the pool's target grows with it); ``root`` is
        the directory its files are served from."""
        with self.lock:
            pool = self.account.pools[pool_id]
            node = ComputeNode(node_id or new_node_id(dedicated), pool_id, dedicated, state, root)
            if start_task is not None:
                node.start_task = start_task
            self.account.add(pool, node)
            if dedicated:
                pool.target_dedicated += 1
            else:
                pool.target_spot += 1
            return node

    def settle(self) -> None:
        """Let every pending resize, removal, reboot and reimage finish now."""
        with self.lock:
            self.account.settle()

    def received(self, method: str, path_prefix: str) -> list[Request]:
        """The requests so far with this method whose path starts with the prefix."""
        return self.server.received(method, path_prefix)

    # -- HTTP ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        query = parse_qs(urlsplit(request.path).query)
        if query.get("api-version") != [API_VERSION]:
            return _error(
                400,
                "UnsupportedRequestVersion",
                f"The specified version of the Batch REST API is not supported; "
                f"use api-version={API_VERSION}.",
            )
        with self.lock:
            try:
                return self._route(request, urlsplit(request.path).path, query)
            except BatchRefusal as exc:
                return _error(exc.status, exc.code, exc.message)

    def _authenticate(self, request: Request) -> Optional[Response]:
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        if self.token is not None and auth == f"Bearer {self.token}":
            return None
        scheme, _, credential = auth.partition(" ")
        account, _, signature = credential.partition(":")
        headers = {k.lower(): v for k, v in request.headers.items()}
        sent = headers.get("ocp-date") or headers.get("date") or ""
        try:
            when = email.utils.parsedate_to_datetime(sent).timestamp()
        except (TypeError, ValueError):
            when = None
        try:
            expected = sign(self.key, string_to_sign(request, self.name))
        except binascii.Error:
            expected = ""
        if (
            scheme == "SharedKey"
            and account == self.name
            and when is not None
            and abs(time.time() - when) <= SKEW
            and hmac.compare_digest(signature.encode(), expected.encode())
        ):
            return None
        return _error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of the "
            "Authorization header is correctly formed including the signature.",
            {
                "AuthenticationErrorDetail": "The MAC signature found in the HTTP request is "
                "not the same as any computed signature, or the request is too old."
            },
        )

    def _route(self, request: Request, path: str, query: dict[str, list[str]]) -> Response:
        account, method = self.account, request.method
        node_match = _NODE.fullmatch(path)
        if node_match:
            pool_id, node_id = unquote(node_match.group(1)), unquote(node_match.group(2))
            action = node_match.group(3) or ""
            if method == "GET" and not action:
                return self._json(self._node_document(account.node(pool_id, node_id)))
            if method == "POST" and action in ("/reboot", "/reimage"):
                account.restart(pool_id, node_id, action[1:])
                return self._accepted(path)
            if method == "GET" and action.startswith("/files/"):
                return self._file(pool_id, node_id, unquote(action[len("/files/") :]), path)
        pool_match = _POOL.fullmatch(path)
        if pool_match:
            pool_id, action = unquote(pool_match.group(1)), pool_match.group(2) or ""
            body = _json_body(request)
            if method == "GET" and not action:
                return self._json(self._pool_document(account.pool(pool_id)))
            if method == "PATCH" and not action:
                account.update(pool_id, body)
                return self._accepted(path, 200)
            if method == "GET" and action == "/nodes":
                return self._nodes(account.pool(pool_id), path, query)
            if method == "POST" and action == "/resize":
                account.resize(
                    pool_id, body.get("targetDedicatedNodes"), body.get("targetLowPriorityNodes")
                )
                return self._accepted(path)
            if method == "POST" and action == "/removenodes":
                account.remove_nodes(pool_id, body.get("nodeList"))
                return self._accepted(path)
        return _error(404, "InvalidUri", f"The stand-in has no {method} {path}.")

    # -- documents -------------------------------------------------------------------

    def _json(self, body: dict[str, Any]) -> Response:
        return Response(200, body, (("request-id", str(uuid.uuid4())),), JSON)

    def _accepted(self, path: str, status: int = 202) -> Response:
        headers = (
            ("request-id", str(uuid.uuid4())),
            ("DataServiceVersion", "3.0"),
            ("DataServiceId", self.url + path),
            ("ETag", f"0x{os.urandom(8).hex().upper()}"),
            ("Last-Modified", email.utils.formatdate(usegmt=True)),
        )
        return Response(status, None, headers, JSON)

    def _pool_document(self, pool: Pool) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": pool.id,
            "url": f"{self.url}/pools/{pool.id}",
            "eTag": f"0x{abs(hash((pool.id, pool.modified))):016X}",
            "lastModified": iso(pool.modified),
            "creationTime": iso(pool.created),
            "state": "active",
            "stateTransitionTime": iso(pool.created),
            "allocationState": pool.allocation_state,
            "allocationStateTransitionTime": iso(pool.allocation_changed),
            "vmSize": pool.vm_size,
            "resizeTimeout": "PT15M",
            "currentDedicatedNodes": pool.count(True),
            "currentLowPriorityNodes": pool.count(False),
            "targetDedicatedNodes": pool.target_dedicated,
            "targetLowPriorityNodes": pool.target_spot,
            "enableAutoScale": pool.auto_scale,
            "enableInterNodeCommunication": False,
            "taskSlotsPerNode": 1,
            "taskSchedulingPolicy": {"nodeFillType": "spread"},
        }
        if pool.references:
            document["applicationPackageReferences"] = pool.references
        if pool.start_task is not None:
            document["startTask"] = pool.start_task
        if pool.metadata:
            document["metadata"] = pool.metadata
        return document

    def _node_document(self, node: ComputeNode) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": node.id,
            "url": f"{self.url}/pools/{node.pool_id}/nodes/{node.id}",
            "state": node.state,
            "schedulingState": "enabled",
            "stateTransitionTime": iso(node.changed),
            "allocationTime": iso(node.allocated),
            "ipAddress": "10.0.0.4",
            "affinityId": f"TVM:{node.id}",
            "vmSize": "standard_d4s_v5",
            "totalTasksRun": 0,
            "totalTasksSucceeded": 0,
            "runningTasksCount": 0,
            "runningTaskSlotsCount": 0,
            "isDedicated": node.dedicated,
            "nodeAgentInfo": {"version": "1.12.6", "lastUpdateTime": iso(node.allocated)},
        }
        if node.state not in ("creating", "starting", "unusable"):
            document["lastBootTime"] = iso(node.booted)
        if node.start_task is not None:
            document["startTaskInfo"] = node.start_task.document()
        if node.errors:
            document["errors"] = node.errors
        return document

    def _nodes(self, pool: Pool, path: str, query: dict[str, list[str]]) -> Response:
        try:
            size = min(PAGE, int(query.get("maxresults", [PAGE])[0]))
            start = int(query.get("$skiptoken", ["0"])[0])
        except ValueError:
            return _error(400, "InvalidQueryParameterValue", "maxresults or $skiptoken is invalid.")
        nodes = list(pool.nodes.values())
        body: dict[str, Any] = {
            "odata.metadata": f"{self.url}/$metadata#nodes",
            "value": [self._node_document(n) for n in nodes[start : start + size]],
        }
        if start + size < len(nodes):
            body["odata.nextLink"] = (
                f"{self.url}{path}?api-version={API_VERSION}&maxresults={size}"
                f"&$skiptoken={start + size}"
            )
        return self._json(body)

    def _file(self, pool_id: str, node_id: str, relative: str, path: str) -> Response:
        found = self.account.read_file(pool_id, node_id, relative)
        info = found.stat()
        modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        headers = (
            ("request-id", str(uuid.uuid4())),
            ("ocp-creation-time", email.utils.formatdate(info.st_ctime, usegmt=True)),
            ("ocp-batch-file-isdirectory", "false"),
            ("ocp-batch-file-url", self.url + path),
            ("ocp-batch-file-mode", f"0{info.st_mode:o}"),
            ("Last-Modified", modified),
        )
        return Response(200, found.read_bytes(), headers, "application/octet-stream")


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = request.json() if request.body else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BatchRefusal(400, "InvalidRequestBody", "The request body is not valid JSON.")
    return body
