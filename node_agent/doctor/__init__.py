"""``node-agent doctor``: what is wrong with this node, and how to fix it.

Every check runs (in parallel, each with a time limit) and gives one row: a status
(ok, warning, failed, skipped), what it found, and for anything not ok the fix in
one sentence. Nothing secret is ever shown: credentials are reported as present or
absent, variables through the redacting model.

The checks live by family: ``setup_checks`` (environment, settings, PATH),
``tool_checks`` (packages, executables, libraries, GPUs), ``service_checks`` (Manager,
Metadata Service), ``node_checks`` (worker config, disk and memory, the agent),
``storage_checks`` (the shared storage the worker needs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Optional

from node_agent.config.settings import Settings
from node_agent.doctor.context import Context
from node_agent.doctor.node_checks import (
    check_agent,
    check_resources,
    check_shared_dir,
    check_worker_config,
)
from node_agent.doctor.report import Row, Status, healthy, render, to_json
from node_agent.doctor.service_checks import check_manager, check_metadata
from node_agent.doctor.setup_checks import check_environment, check_path, check_settings
from node_agent.doctor.storage_checks import check_storage
from node_agent.doctor.tool_checks import (
    check_gpus,
    check_libraries,
    check_packages,
    check_tools,
)

__all__ = ["CHECKS", "Context", "Row", "Status", "healthy", "render", "run_checks", "to_json"]

CHECK_LIMIT = 30.0  # seconds any one check may take

Check = Callable[[Context], list[Row]]

CHECKS: tuple[Check, ...] = (
    check_environment,
    check_settings,
    check_packages,
    check_libraries,
    check_tools,
    check_path,
    check_shared_dir,
    check_worker_config,
    check_manager,
    check_metadata,
    check_resources,
    check_storage,
    check_gpus,
    check_agent,
)


def run_checks(
    environ: Mapping[str, str], limit: float = CHECK_LIMIT, settings: Optional[Settings] = None
) -> list[Row]:
    """Every check, in parallel, each within ``limit`` seconds; rows in check order.
    ``settings``: check these (the running agent's) instead of loading them."""
    ctx = Context.from_environ(environ, settings)
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="doctor")
    futures = [(check, pool.submit(check, ctx)) for check in CHECKS]
    deadline = time.monotonic() + limit
    rows: list[Row] = []
    for check, future in futures:
        name = check.__name__.replace("check_", "")
        try:
            rows.extend(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            rows.append(
                Row(
                    name,
                    Status.FAILED,
                    f"no result within {limit:.0f} s",
                    "run that check's command by hand on the node to see where it hangs",
                )
            )
        except Exception as exc:  # noqa: BLE001 (one broken check must not hide the rest)
            why = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else repr(exc)
            rows.append(Row(name, Status.FAILED, f"the check failed: {why}", "fix what it names"))
    # A check past its limit is reported above; the report must not wait for it.
    pool.shutdown(wait=False, cancel_futures=True)
    return rows
