"""How the agent reaches the Flamenco Manager over HTTP, for the wait before every
worker start (``manager``) and the worker-management calls (``manager_api``):
through the proxy the worker uses, in a session that takes nothing else from the
agent's environment, and why a request failed, in words an operator can act on.

The agent reaches the Manager through the same proxy as the worker does
(``proxies_for``): otherwise it could report the Manager fine while the worker
cannot reach it, or the reverse.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

PROBE_TIMEOUT = 10.0  # seconds for one request


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
