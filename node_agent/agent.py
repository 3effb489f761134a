"""``node-agent run``: the start task's whole life, put together.

Lock the node, stop a worker a killed agent left behind, apply the bootstrap plan,
supervise the worker while watching Scheduled Events and the node's health, with
the start-up health report running beside it (``health_report``). When
the platform is about to take the node away: stop the worker (winding it down first
when there is time), forget it on the Manager when the node comes back with a wiped
disk, let the platform go ahead, and keep watching: the worker starts again if the
event does not happen. Supervision ends only on a stop signal (or when the Manager
ends the worker's life); the platform ends the agent by taking the node.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from node_agent import bootstrap
from node_agent.bootstrap import Plan
from node_agent.common.errors import InvalidInput, RuntimeFailure, unexpected
from node_agent.common.log import get_logger
from node_agent.config.settings import Settings
from node_agent.doctor import startup as health_report
from node_agent.imds.watcher import EventWatcher
from node_agent.manager.api import ManagerApi, delete_worker
from node_agent.manager.credentials import worker_id
from node_agent.manager.identity import IdentityKeeper
from node_agent.manager.status import StatusRequests
from node_agent.manager.wait import ManagerCheck
from node_agent.manager.worker_ids import WorkerIds
from node_agent.node.env import BatchEnv
from node_agent.node.flavour import Flavour
from node_agent.node.gpus import effective_worker_tags
from node_agent.runtime import proctree
from node_agent.runtime.health import HealthWatch, disk_floor
from node_agent.runtime.holds import Holds
from node_agent.runtime.lock import LOCK_FILE, NodeLock
from node_agent.runtime.policy import RestartPolicy
from node_agent.runtime.reaction import EventReaction
from node_agent.runtime.state import (
    STATE_FILE,
    AgentState,
    Phase,
    StateKeeper,
    StateProblem,
    own_create_time,
    read_state,
)
from node_agent.runtime.storage import StorageCheck, storage_mounts, worker_environment
from node_agent.runtime.supervise import GaveUp, Supervisor
from node_agent.runtime.worker import stop_stale_worker, worker_spec

log = get_logger("agent")

# Reboot/Redeploy: stop the worker this long before NotBefore, beyond its grace.
EVENT_MARGIN = 15.0
# Seconds for one Manager call made while platform events are watched (a status
# request, forgetting the worker): the watcher waits on it, and a Preempt listed
# meanwhile must still be acted on well within its 30 s.
EVENT_CALL_TIMEOUT = 3.0


def run(
    environ: Mapping[str, str],
    env: BatchEnv,
    settings: Settings,
    plan: Plan,
    early_stops: Sequence[str] = (),
) -> int:
    """Run the node until supervision ends; returns the exit code. ``early_stops``:
    the stop signals received so far (``stopsignals.hold``), and any that
    arrive until supervision begins."""
    layout = plan.layout
    bootstrap.applicable(plan)
    try:
        os.makedirs(layout.agent_dir, exist_ok=True)
    except OSError as exc:
        raise RuntimeFailure(f"cannot create {layout.agent_dir}: {exc.strerror}") from None
    lock = NodeLock(os.path.join(layout.agent_dir, LOCK_FILE))
    lock.acquire()
    report: Optional[health_report.StartupReport] = None
    try:
        state_path = os.path.join(layout.agent_dir, STATE_FILE)
        stop_stale_worker(_previous_state(state_path), settings.stop_grace)
        done = bootstrap.apply(plan)
        log.info("bootstrap: %s", f"{len(done)} change(s)" if done else "nothing to change")
        state = StateKeeper(state_path, _first_state(plan))
        with _last_resort(state, settings.stop_grace):
            if not proctree.become_subreaper():
                log.warning(
                    "cannot become a child subreaper: orphaned worker processes may outlive a stop"
                )
            if not early_stops:  # a node being stopped has no use for the report
                # Beside the worker, forked before any thread starts.
                report = health_report.start(environ, settings, close=lock.release)
            # The worker inherits the proxy variables unchanged: the same proxy for both.
            api = ManagerApi.for_worker(settings.manager_url, environ)
            credentials = Path(layout.credentials(plan.flavour.flavour))
            keeper = None
            if plan.flavour.flavour is Flavour.V3:
                ids = None
                if settings.worker_name is not None:  # other nodes may have it too
                    ids = WorkerIds(plan.layout.worker_ids())
                tags = effective_worker_tags(
                    settings.worker_tags, settings.gpu_tags, environ.get("PATH", os.defpath)
                )
                keeper = IdentityKeeper(api, credentials, plan.worker_name, tags, ids=ids).start()
            status = None
            if plan.flavour.flavour is Flavour.V3:
                status = StatusRequests(
                    replace(api, timeout=EVENT_CALL_TIMEOUT),
                    credentials,
                    Path(plan.layout.status_asked()),
                )
            supervisor = _supervisor(
                environ, env, settings, plan, state, api=api, keeper=keeper, status=status
            )
            supervisor.early_stops = early_stops
            if status is not None:
                supervisor.before_worker_start = [_before_start(status, supervisor.holds)]
            health = HealthWatch(
                env.node.root_dir,
                disk_floor(env),
                worker_pid=lambda: supervisor.state.worker_pid,
                post=supervisor.holds.post,
                status=status,
            ).start()
            watcher = _event_watcher(supervisor, env, settings, plan, api=api, status=status)
            try:
                try:
                    return supervisor.run()
                except GaveUp as exc:
                    raise RuntimeFailure(str(exc)) from None
            finally:
                health.stop()
                if watcher is not None:
                    watcher.stop()
                if keeper is not None:
                    keeper.stop()
    finally:
        if report is not None:
            report.stop()
        lock.release()


@contextlib.contextmanager
def _last_resort(state: StateKeeper, grace: float) -> Iterator[None]:
    """On an exception nobody expected (a bug, an odd fault): stop the worker's tree,
    so that no worker is left without a supervisor, and finish the state file with
    the reason, before the command line logs it in one line and exits 1."""
    try:
        yield
    except (RuntimeFailure, InvalidInput):
        raise
    except Exception as exc:
        stop_stale_worker(state.state, grace)
        state.update(
            phase=Phase.STOPPED,
            stop_reason=f"node-agent failed: {unexpected(exc)}",
            next_start_at=None,
        )
        raise


def _previous_state(path: str) -> Optional[AgentState]:
    """The state a previous agent left, or None; a bad state file is only advice
    lost, never a reason not to start."""
    try:
        return read_state(path)
    except StateProblem as exc:
        log.warning(
            "ignoring the state file %s: it %s; a worker left by a killed agent cannot be "
            "found through it (it is rewritten now)",
            path,
            exc,
        )
        return None


def _first_state(plan: Plan) -> AgentState:
    return AgentState(
        agent_pid=os.getpid(),
        agent_create_time=own_create_time(),
        phase=Phase.STARTING,
        started_at=time.time(),
        flavour=plan.flavour.flavour.value,
        worker_name=plan.worker_name,
        worker_executable=plan.worker_executable,
        worker_dir=plan.layout.worker_dir,
        config_path=plan.config_path,
    )


def _supervisor(
    environ: Mapping[str, str],
    env: BatchEnv,
    settings: Settings,
    plan: Plan,
    state: StateKeeper,
    *,
    api: ManagerApi,
    keeper: Optional[IdentityKeeper],
    status: Optional[StatusRequests],
) -> Supervisor:
    policy = RestartPolicy(
        flavour=plan.flavour.flavour,
        restart_exit_code=settings.restart_exit_code,
        restart_on_clean_exit=settings.restart_on_clean_exit,
        backoff_initial=settings.backoff_initial,
        backoff_cap=settings.backoff_cap,
        reset_after=settings.backoff_reset_after,
        min_uptime=settings.min_uptime,
    )
    check = ManagerCheck(
        api,
        flavour=plan.flavour.flavour,
        cap=settings.manager_wait_cap,
        deadline=settings.manager_wait_deadline,
    )
    mounts = storage_mounts(env, settings.storage_mounts)
    spec = worker_spec(plan, settings, environ)
    with_storage = {**dict(spec.env), **worker_environment(mounts)}
    spec = replace(spec, env=tuple(sorted(with_storage.items())))
    return Supervisor(
        spec,
        policy,
        settings,
        state,
        manager=check,
        storage=StorageCheck(mounts, settings.storage_wait_cap) if mounts else None,
        on_worker_start=[told.worker_started for told in (keeper, status) if told is not None],
    )


def _before_start(status: StatusRequests, holds: Holds) -> Callable[[], None]:
    """Before each start: take back a status request of the agent's nothing wants
    any more, and if that fails, read an exit 0 of the run as the agent's doing."""

    def before() -> None:
        taken = status.before_start()
        holds.may_be_told_offline(None if taken else "offline node-agent asked for earlier")

    return before


def _event_watcher(
    supervisor: Supervisor,
    env: BatchEnv,
    settings: Settings,
    plan: Plan,
    *,
    api: ManagerApi,
    status: Optional[StatusRequests],
) -> Optional[EventWatcher]:
    """Watch Scheduled Events (unless ``watch_events`` is off) and react to them."""
    if not settings.watch_events:
        return None
    reaction = EventReaction(
        supervisor.holds,
        margin=settings.stop_grace + EVENT_MARGIN,
        status=status,
        forget=_forgetter(env, settings, plan, replace(api, timeout=EVENT_CALL_TIMEOUT)),
    )
    watcher = EventWatcher(settings.imds_url, reaction)
    if settings.ack_events:
        reaction.acknowledge = watcher.client.acknowledge
    return watcher.start()


def _forgetter(
    env: BatchEnv, settings: Settings, plan: Plan, api: ManagerApi
) -> Optional[Callable[[], bool]]:
    """What removes the worker from the Manager before a disk-wiping event, when
    ``forget_worker`` says so (auto: on Spot nodes)."""
    forget = env.node.is_spot if settings.forget_worker is None else settings.forget_worker
    if not forget:
        return None
    if plan.flavour.flavour is not Flavour.V3:
        log.info("forget_worker: not removing a v2 worker from the Manager: only v3 Managers can")
        return None

    def forget_now() -> bool:
        found = worker_id(Path(plan.layout.credentials(plan.flavour.flavour)))
        if found is None:
            log.info("no worker credentials: nothing to remove from the Manager")
            return False
        return delete_worker(api, found, "the node comes back with a wiped disk and registers anew")

    return forget_now
