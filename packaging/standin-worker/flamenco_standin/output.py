"""The stand-in worker's log lines: stdout, RFC 3339 times, ANSI colours unless
NO_COLOR is set, as the real worker writes them."""

import os
import sys
import time

LEVELS = {"TRC": 0, "DBG": 1, "INF": 2, "WRN": 3, "ERR": 4, "FTL": 5}
COLOURS = {"TRC": "35", "DBG": "33", "INF": "32", "WRN": "31", "ERR": "1;31", "FTL": "1;31"}

shown = {"level": LEVELS["INF"]}  # set from the flags


class Fatal(Exception):
    """Logged at fatal level; the worker exits 1."""


def log(lvl, msg, **fields):
    if LEVELS[lvl] < shown["level"]:
        return
    colour = not os.environ.get("NO_COLOR")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    parts = [f"\x1b[90m{stamp}\x1b[0m" if colour else stamp]
    parts.append(f"\x1b[{COLOURS[lvl]}m{lvl}\x1b[0m" if colour else lvl)
    parts.append(msg)
    for key, value in fields.items():
        parts.append(f"\x1b[36m{key}=\x1b[0m{value}" if colour else f"{key}={value}")
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()
