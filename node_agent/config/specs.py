"""Every setting: its YAML key, environment variable, command-line option, value
parser (in ``setting_values``) and default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from node_agent.config import values
from node_agent.node.flavour import Flavour


@dataclass(frozen=True)
class Spec:
    key: str  # attribute, YAML key
    env: str  # environment variable
    flag: str  # command-line option
    parse: Callable[[str], Any]
    default: Any
    help: str
    many: bool = False  # takes a list (a YAML list, or names separated on one line)

    @property
    def switch(self) -> bool:
        """Whether it is a boolean: as an option, alone it means true."""
        return self.parse in (values.boolean, values.auto_boolean)


SPECS = (
    Spec(
        "manager_url",
        "FLAMENCO_MANAGER_URL",
        "--manager-url",
        values.url,
        None,
        "the Flamenco Manager's URL (required)",
    ),
    Spec(
        "task_types",
        "FLAMENCO_TASK_TYPES",
        "--task-types",
        values.words,
        None,
        "task types the worker accepts (default: the worker's own)",
        many=True,
    ),
    Spec(
        "worker_name",
        "FLAMENCO_WORKER_NAME",
        "--worker-name",
        values.name,
        None,
        "the worker's name (default: <pool id>-<short node id>)",
    ),
    Spec(
        "flavour",
        "FLAMENCO_WORKER_FLAVOUR",
        "--flavour",
        values.flavour,
        Flavour.AUTO,
        "auto, v2 or v3 (auto: from the flamenco-worker package version)",
    ),
    Spec(
        "restart_exit_code",
        "FLAMENCO_RESTART_EXIT_CODE",
        "--restart-exit-code",
        values.exit_code,
        75,
        "exit code by which the worker asks to be restarted",
    ),
    Spec(
        "worker_tags",
        "FLAMENCO_WORKER_TAGS",
        "--worker-tags",
        values.tag_names,
        (),
        "v3: names of Manager tags to give every new registration (comma separated)",
        many=True,
    ),
    Spec(
        "oom_score_adjust",
        "FLAMENCO_OOM_SCORE_ADJUST",
        "--oom-score-adjust",
        values.oom_score_adjust,
        500,
        "v3: oom_score_adj of Blender and ffmpeg (0-1000, or none)",
    ),
    Spec(
        "worker_args",
        "FLAMENCO_WORKER_ARGS",
        "--worker-args",
        values.worker_args,
        (),
        "extra command-line arguments for the worker, e.g. -debug",
        many=True,
    ),
    Spec(
        "registration_secret",
        "FLAMENCO_REGISTRATION_SECRET",
        "--registration-secret",
        values.secret,
        None,
        "v2 only: the Manager's worker registration secret",
    ),
    Spec(
        "tools",
        "NODE_AGENT_TOOLS",
        "--tools",
        values.words,
        ("blender", "ffmpeg", "ffprobe"),
        "executables to link into the shared dir",
        many=True,
    ),
    Spec(
        "stop_grace",
        "NODE_AGENT_STOP_GRACE",
        "--stop-grace",
        values.seconds,
        30.0,
        "seconds between SIGTERM to the worker and SIGKILL to its whole tree",
    ),
    Spec(
        "backoff_initial",
        "NODE_AGENT_BACKOFF_INITIAL",
        "--backoff-initial",
        values.seconds,
        1.0,
        "seconds: the first restart delay window after a failure",
    ),
    Spec(
        "backoff_cap",
        "NODE_AGENT_BACKOFF_CAP",
        "--backoff-cap",
        values.seconds,
        60.0,
        "seconds: the largest restart delay window",
    ),
    Spec(
        "backoff_reset_after",
        "NODE_AGENT_BACKOFF_RESET_AFTER",
        "--backoff-reset-after",
        values.seconds,
        300.0,
        "seconds of worker uptime after which the backoff starts over",
    ),
    Spec(
        "restart_on_clean_exit",
        "NODE_AGENT_RESTART_ON_CLEAN_EXIT",
        "--restart-on-clean-exit",
        values.boolean,
        False,
        "v3: restart the worker even after the Manager asked it to shut down",
    ),
    Spec(
        "min_uptime",
        "NODE_AGENT_MIN_UPTIME",
        "--min-uptime",
        values.seconds,
        10.0,
        "seconds a worker must run for a requested restart to be done at once",
    ),
    Spec(
        "max_restarts",
        "NODE_AGENT_MAX_RESTARTS",
        "--max-restarts",
        values.count,
        0,
        "give up after this many failed restarts in a row (0: never)",
    ),
    Spec(
        "timestamps",
        "NODE_AGENT_TIMESTAMPS",
        "--timestamps",
        values.boolean,
        False,
        "prefix each forwarded worker line with a UTC timestamp",
    ),
    Spec(
        "manager_wait_cap",
        "NODE_AGENT_MANAGER_WAIT_CAP",
        "--manager-wait-cap",
        values.seconds,
        60.0,
        "seconds: the largest wait between attempts to reach the Manager",
    ),
    Spec(
        "manager_wait_deadline",
        "NODE_AGENT_MANAGER_WAIT_DEADLINE",
        "--manager-wait-deadline",
        values.deadline,
        None,
        "seconds to wait for the Manager before giving up (0: never give up)",
    ),
    Spec(
        "watch_events",
        "NODE_AGENT_WATCH_EVENTS",
        "--watch-events",
        values.boolean,
        True,
        "watch Azure Scheduled Events (preemption, reboots)",
    ),
    Spec(
        "ack_events",
        "NODE_AGENT_ACK_EVENTS",
        "--ack-events",
        values.boolean,
        True,
        "acknowledge an event once the worker has stopped for it",
    ),
    Spec(
        "forget_worker",
        "NODE_AGENT_FORGET_WORKER",
        "--forget-worker",
        values.auto_boolean,
        None,
        "v3: remove the worker from the Manager before preemption (auto: on Spot nodes)",
    ),
    Spec(
        "imds_url",
        "NODE_AGENT_IMDS_URL",
        "--imds-url",
        values.url,
        "http://169.254.169.254",
        "the Instance Metadata Service's base URL",
    ),
    Spec(
        "storage_mounts",
        "NODE_AGENT_STORAGE_MOUNTS",
        "--storage-mounts",
        values.mount_names,
        (),
        "mounts the worker needs, relative to AZ_BATCH_NODE_MOUNTS_DIR (default: none)",
        many=True,
    ),
    Spec(
        "storage_wait_cap",
        "NODE_AGENT_STORAGE_WAIT_CAP",
        "--storage-wait-cap",
        values.seconds,
        60.0,
        "seconds: the largest wait between looks at missing shared storage",
    ),
    Spec(
        "install_system_packages",
        "NODE_AGENT_INSTALL_SYSTEM_PACKAGES",
        "--install-system-packages",
        values.boolean,
        False,
        "admin start tasks only: apt-get install the system libraries the tools lack",
    ),
    Spec(
        "gpu_tags",
        "NODE_AGENT_GPU_TAGS",
        "--gpu-tags",
        values.tag_names,
        (),
        "v3: Manager tags added to worker_tags when nvidia-smi finds a GPU (comma separated)",
        many=True,
    ),
    Spec(
        "cycles_device",
        "NODE_AGENT_CYCLES_DEVICE",
        "--cycles-device",
        values.cycles_device,
        None,
        "render Cycles on this device whatever the .blend says: OPTIX, CUDA, HIP, ONEAPI, CPU",
    ),
)


BY_KEY = {spec.key: spec for spec in SPECS}
