"""What the stand-in worker is told: its flags (Go's flag package), its
flamenco-worker.yaml, its data dir, and its waits (FLAMENCO_STANDIN_TIME_SCALE,
stand-in only, multiplies every wait of its own, so tests can run it faster)."""

import os
import socket
import sys

from flamenco_standin.output import Fatal, log

VERSION = "3.6-standin"
CONFIG = "flamenco-worker.yaml"
CREDENTIALS = "flamenco-worker-credentials.yaml"
DEFAULT_TASK_TYPES = ["blender", "ffmpeg", "file-management", "misc"]
SCALE = float(os.environ.get("FLAMENCO_STANDIN_TIME_SCALE") or 1)
# The real worker's waits, in seconds (scaled for tests).
SIGN_ON_RETRY, FIRST_FETCH, NO_TASK, FETCH_FAILED = 5 * SCALE, 3 * SCALE, 20 * SCALE, 60 * SCALE
TASK_COMPLETE, MAY_I_RUN, SLEEP_CHECK = 2 * SCALE, 10 * SCALE, 3 * SCALE
SIGN_OFF_TIMEOUT, FORCED_EXIT = 3.0, 20 * SCALE
BOOL_FLAGS = ("version", "flush", "quiet", "debug", "trace", "register", "find-manager")
VALUE_FLAGS = ("manager", "restart-exit-code")


def parse_flags(argv):
    """Go's flag package: -name, --name, -name=value, -name value."""
    flags, args = {}, list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-") or arg in ("-", "--"):
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in BOOL_FLAGS:
            flags[name] = value.lower() in ("", "1", "t", "true") if has_value else True
        elif name in VALUE_FLAGS:
            if not has_value:
                if not args:
                    sys.stderr.write(f"flag needs an argument: -{name}\n")
                    sys.exit(2)
                value = args.pop(0)
            flags[name] = value
        else:
            sys.stderr.write(f"flag provided but not defined: -{name}\nUsage of flamenco-worker:\n")
            sys.exit(2)
    return flags


def read_yaml(path):
    """Top-level 'key: value' pairs and '- item' lists (what node-agent writes);
    ValueError for anything else, as a YAML error is fatal for the real worker."""
    document, current = {}, None
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.split(" #", 1)[0].rstrip()
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.lstrip().startswith("- ") and isinstance(document.get(current), list):
                document[current].append(line.lstrip()[2:].strip().strip("'\""))
                continue
            key, colon, value = line.partition(":")
            if not colon or line[0].isspace():
                raise ValueError(f"{path}: line {number}: cannot parse {line!r}")
            value = value.strip()
            current = key.strip()
            document[current] = value[1:-1] if value[:1] in "'\"" and value else value or []
    return document


def load_config(flags):
    config = {"task_types": DEFAULT_TASK_TYPES, "restart_exit_code": "0", "manager_url": ""}
    try:
        if os.path.exists(CONFIG):
            config.update(read_yaml(CONFIG))
        for key in ("restart_exit_code", "oom_score_adjust"):
            if key in config:
                config[key] = int(config[key] or 0)
    except (OSError, ValueError) as exc:
        raise Fatal(f"error loading worker configuration: {exc}") from None
    if flags.get("manager"):
        log("INF", "using Manager URL from commandline", manager=flags["manager"])
        config["manager_url"] = flags["manager"]
    if int(flags.get("restart-exit-code") or 0):
        config["restart_exit_code"] = int(flags["restart-exit-code"])
        log(
            "INF", "will tell Manager this Worker can restart", exitCode=config["restart_exit_code"]
        )
    name = str(config.get("worker_name") or "").strip()
    config["worker_name"] = (
        name or os.environ.get("FLAMENCO_WORKER_NAME", "").strip() or socket.gethostname()
    )
    return config


def data_dir():
    if os.environ.get("FLAMENCO_HOME"):
        return os.environ["FLAMENCO_HOME"]
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(xdg, "flamenco")
