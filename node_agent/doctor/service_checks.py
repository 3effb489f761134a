"""Checks of the services the node talks to: the Flamenco Manager and the Instance
Metadata Service."""

from __future__ import annotations

import time
from typing import Any

from node_agent.config.specs import BY_KEY
from node_agent.doctor.context import Context
from node_agent.doctor.report import Row, Status
from node_agent.imds.client import ImdsClient, ImdsProblem
from node_agent.manager.api import ManagerApi
from node_agent.manager.transport import manager_session
from node_agent.manager.wait import ManagerCheck, ManagerUnavailable, probe

HTTP_TIMEOUT = 5.0  # seconds for the Manager's answer
IMDS_TIMEOUT = 2.0  # seconds for the Metadata Service's: off Azure, nothing answers
NO_ANSWER = ("connection refused", "cannot connect", "timeout")  # ``ImdsProblem`` kinds


def check_manager(ctx: Context) -> list[Row]:
    """The Manager answers (through the proxy the worker would use), and how fast."""
    if ctx.settings is None or ctx.flavour is None:
        return [Row("manager", Status.SKIPPED, "skipped: the settings or environment do not parse")]
    api = ManagerApi.for_worker(ctx.settings.manager_url, ctx.environ, HTTP_TIMEOUT)
    check = ManagerCheck(api, ctx.flavour, cap=1.0, deadline=None)
    started = time.monotonic()
    try:
        with manager_session(api.proxies) as session:
            answer = probe(session, check)
    except ManagerUnavailable as exc:
        return [
            Row(
                "manager",
                Status.FAILED,
                f"{api.url}: {exc}",
                "check the Manager runs and FLAMENCO_MANAGER_URL points at it from the "
                "pool's network (firewall, port)",
            )
        ]
    elapsed = (time.monotonic() - started) * 1000
    return [Row("manager", Status.OK, f"{answer} in {elapsed:.0f} ms")]


def _imds_url(ctx: Context) -> str:
    """The settings' ``imds_url``; where the settings do not parse, the environment's
    if it is a valid one, else the default."""
    if ctx.settings is not None:
        return ctx.settings.imds_url
    spec = BY_KEY["imds_url"]
    try:
        return str(spec.parse(ctx.environ[spec.env]))
    except (KeyError, ValueError):
        return str(spec.default)


def check_metadata(ctx: Context) -> list[Row]:
    """The Instance Metadata Service: VM name, size, priority; or not on Azure."""
    client = ImdsClient(_imds_url(ctx), IMDS_TIMEOUT)
    url = client.base_url
    try:
        document: Any = client.instance()
        compute = document["compute"]
        if not isinstance(compute, dict):
            raise TypeError("compute is not an object")
    except ImdsProblem as exc:
        if str(exc) in NO_ANSWER:
            return [Row("metadata service", Status.SKIPPED, f"no answer from {url}: not on Azure")]
        problem = f"{url} answered, but not with an instance document ({exc})"
    except (KeyError, TypeError):
        problem = f"{url} answered, but not with an instance document"
    else:
        return [
            Row(
                "metadata service",
                Status.OK,
                f"VM {compute.get('name')}, "
                f"{compute.get('vmSize')}, {compute.get('priority') or 'Regular'} priority",
            )
        ]
    finally:
        client.close()
    return [
        Row(
            "metadata service",
            Status.WARNING,
            problem,
            "preemption warnings may not work: check the VM's network reaches "
            f"{url} without a proxy",
        )
    ]
