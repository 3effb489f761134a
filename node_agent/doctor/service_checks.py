"""Checks of the services the node talks to: the Flamenco Manager and the Instance
Metadata Service."""

from __future__ import annotations

import time
from typing import Any

import requests

from node_agent.doctor.context import Context
from node_agent.doctor.report import Row, Status
from node_agent.manager import ManagerCheck, ManagerUnavailable, probe
from node_agent.manager_http import manager_session, proxies_for

HTTP_TIMEOUT = 5.0


def check_manager(ctx: Context) -> list[Row]:
    """The Manager answers (through the proxy the worker would use), and how fast."""
    if ctx.settings is None or ctx.flavour is None:
        return [Row("manager", Status.SKIPPED, "skipped: the settings or environment do not parse")]
    check = ManagerCheck(
        url=ctx.settings.manager_url,
        flavour=ctx.flavour,
        cap=1.0,
        deadline=None,
        timeout=HTTP_TIMEOUT,
        proxies=proxies_for(ctx.settings.manager_url, ctx.environ),
    )
    started = time.monotonic()
    try:
        with manager_session(check.proxies) as session:
            answer = probe(session, check)
    except ManagerUnavailable as exc:
        return [
            Row(
                "manager",
                Status.FAILED,
                f"{check.url}: {exc}",
                "check the Manager runs and FLAMENCO_MANAGER_URL points at it from the "
                "pool's network (firewall, port)",
            )
        ]
    elapsed = (time.monotonic() - started) * 1000
    return [Row("manager", Status.OK, f"{answer} in {elapsed:.0f} ms")]


def check_metadata(ctx: Context) -> list[Row]:
    """The Instance Metadata Service: VM name, size, priority; or not on Azure."""
    default = ctx.environ.get("NODE_AGENT_IMDS_URL", "http://169.254.169.254")
    url = (ctx.settings.imds_url if ctx.settings else default).rstrip("/")
    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(
                url + "/metadata/instance?api-version=2021-02-01",
                headers={"Metadata": "true"},
                timeout=2.0,
            )
        compute: dict[str, Any] = response.json()["compute"]
    except requests.RequestException:
        return [Row("metadata service", Status.SKIPPED, f"no answer from {url}: not on Azure")]
    except (ValueError, KeyError, TypeError):
        return [
            Row(
                "metadata service",
                Status.WARNING,
                f"{url} answered, but not with an instance document",
                "preemption warnings may not work: check the VM's "
                "network reaches 169.254.169.254 without a proxy",
            )
        ]
    return [
        Row(
            "metadata service",
            Status.OK,
            f"VM {compute.get('name')}, "
            f"{compute.get('vmSize')}, {compute.get('priority') or 'Regular'} priority",
        )
    ]
