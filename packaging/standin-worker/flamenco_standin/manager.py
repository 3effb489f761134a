"""The Manager's worker API as the stand-in worker speaks it: HTTP Basic auth once
registered, registering (one attempt), signing on (retried while the Manager cannot
be reached; any HTTP error answer makes it register anew) and signing off."""

import base64
import json
import os
import platform
import time
import urllib.error
import urllib.parse
import urllib.request

from flamenco_standin.config import (
    CREDENTIALS,
    SIGN_OFF_TIMEOUT,
    SIGN_ON_RETRY,
    VERSION,
    data_dir,
    read_yaml,
)
from flamenco_standin.output import Fatal, log


class Unreachable(Exception):
    """The Manager could not be reached (no HTTP answer)."""


class Manager:
    """The Manager's API, HTTP Basic auth once registered. Like Go's HTTP client,
    proxies from the environment, never for a loopback host."""

    def __init__(self, url):
        self.base = url.rstrip("/") + "/api/v3"
        self.auth = None
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._proxied = urllib.request.build_opener()

    def call(self, method, path, body=None, timeout=10.0):
        """(status, JSON body) for any HTTP answer; Unreachable without one."""
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": f"Flamenco/{VERSION}"},
        )
        if self.auth:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        host = urllib.parse.urlsplit(self.base).hostname or ""
        local = host == "localhost" or host.startswith("127.") or host == "::1"
        try:
            with (self._direct if local else self._proxied).open(request, timeout=timeout) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(str(getattr(exc, "reason", exc))) from None
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {"message": data[:200].decode(errors="replace")}


def register_or_sign_on(manager, config):
    path = os.path.join(data_dir(), CREDENTIALS)
    try:
        found = read_yaml(path)
        manager.auth = (str(found["worker_id"]), str(found["worker_secret"]))
    except (OSError, ValueError, KeyError):
        manager.auth = None
    if manager.auth:
        while True:
            try:
                status, answer = sign_on(manager, config)
                break
            except Unreachable as exc:
                log("WRN", "unable to send sign-on request", error=exc)
                time.sleep(SIGN_ON_RETRY)
        if status == 200:
            return answer.get("status_requested", "")
        log("WRN", "unable to sign on at Manager", code=status, resp=json.dumps(answer))
    manager.auth = None
    secret = os.urandom(32).hex()
    try:
        status, answer = manager.call(
            "POST",
            "/worker/register-worker",
            {
                "name": config["worker_name"],
                "platform": platform.system().lower(),
                "secret": secret,
                "supported_task_types": config["task_types"],
            },
        )
    except Unreachable as exc:
        raise Fatal(f"error registering at Manager: {exc}") from None
    if status != 200:
        raise Fatal(f"unable to register at Manager: code={status} resp={json.dumps(answer)}")
    log("INF", "registered at Manager", code=status, uuid=answer["uuid"])
    try:
        os.makedirs(data_dir(), exist_ok=True)
        fd = os.open(path + "~", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"worker_id: {answer['uuid']}\nworker_secret: {secret}\n")
        os.replace(path + "~", path)
    except OSError as exc:
        raise Fatal(f"unable to write credentials file: {exc}") from None
    manager.auth = (answer["uuid"], secret)
    try:
        status, answer = sign_on(manager, config)
    except Unreachable as exc:
        raise Fatal(f"unable to sign on after registering: {exc}") from None
    if status != 200:
        raise Fatal(f"unable to sign on after registering: code={status}")
    return answer.get("status_requested", "")


def sign_on(manager, config):
    log("INF", "signing on at Manager", name=config["worker_name"], softwareVersion=VERSION)
    status, answer = manager.call(
        "POST",
        "/worker/sign-on",
        {
            "name": config["worker_name"],
            "supported_task_types": config["task_types"],
            "software_version": VERSION,
            "can_restart": config["restart_exit_code"] != 0,
        },
    )
    if status == 200:
        log("INF", "manager accepted sign-on", startup_state=answer.get("status_requested"))
    return status, answer


def sign_off(manager):
    log("INF", "signing off at Manager")
    try:
        status, _ = manager.call("POST", "/worker/sign-off", timeout=SIGN_OFF_TIMEOUT)
    except Unreachable as exc:
        log("ERR", "unable to sign off at Manager", error=exc)
        return
    if status != 204:
        log("ERR", "error received when signing off at Manager", code=status)
