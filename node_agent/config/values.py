"""How each setting's text becomes its value. Every parser is pure: text in, typed
value out, or ``ValueError("what was expected")``."""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Optional
from urllib.parse import urlsplit

from node_agent.node.flavour import Flavour


def control(text: str) -> bool:
    """Whether ``text`` holds a line break or another control character: in a value
    written into the worker's config file it could start a line of its own (a key
    the operator never set, a section)."""
    return any(c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" for c in text)


def url(text: str) -> str:
    value = text.strip()
    expected = "expected an http:// or https:// URL with a host"
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{expected}, without spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError for a port that is no number or out of range
    except ValueError:
        raise ValueError(f"{expected} and, if any, a port from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    if port == 0:
        raise ValueError(f"{expected} and, if any, a port from 1 to 65535")
    return value


def words(text: str) -> tuple[str, ...]:
    found = tuple(w for w in re.split(r"[\s,]+", text) if w)
    if not found:
        raise ValueError("expected at least one name (space or comma separated)")
    if any(control(w) for w in found):
        raise ValueError("expected names without control characters")
    return found


def name(text: str) -> str:
    if not text.strip() or control(text):
        raise ValueError("expected a non-empty single-line name without control characters")
    return text.strip()


def exit_code(text: str) -> int:
    try:
        code = int(text)
    except ValueError:
        raise ValueError("expected a whole number from 1 to 255") from None
    if not 0 < code < 256:
        raise ValueError(
            "expected a whole number from 1 to 255 (0 would make a "
            "Manager-requested restart look like a shutdown)"
        )
    return code


def tag_names(text: str) -> tuple[str, ...]:
    # Commas (or one a line), not spaces: tag names such as "Cycles GPU" have spaces.
    return tuple(dict.fromkeys(n.strip() for n in re.split(r"[,\n]", text) if n.strip()))


# Blender's --cycles-device values (docs.blender.org, "Command Line Rendering",
# Cycles); "+CPU" after a GPU type renders on the CPU too.
CYCLES_DEVICES = ("CPU", "CUDA", "OPTIX", "HIP", "ONEAPI", "METAL")


def cycles_device(text: str) -> Optional[str]:
    value = text.strip().upper()
    if value in ("", "NONE", "OFF"):
        return None
    device, _, plus = value.partition("+")
    if device not in CYCLES_DEVICES or plus not in ("", "CPU") or (plus and device == "CPU"):
        raise ValueError(
            f"expected one of {', '.join(CYCLES_DEVICES)} (a GPU type may add +CPU), or none"
        )
    return value


def oom_score_adjust(text: str) -> Optional[int]:
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number from 0 to 1000, or none") from None
    if not 0 <= value <= 1000:
        raise ValueError(
            "expected a whole number from 0 to 1000, or none (a negative value needs a "
            "privilege a non-admin start task does not have)"
        )
    return value


# Flags whose job node-agent does: passing them would break supervision.
OWNED_FLAGS = {
    "manager": "set manager_url instead",
    "restart-exit-code": "set restart_exit_code instead",
    "version": "it makes the worker exit at once",
    "flush": "it makes the worker exit at once",
    "find-manager": "it makes the worker exit at once",
}


def worker_args(text: str) -> tuple[str, ...]:
    # A YAML list arrives one item a line; other text is split as a shell would.
    try:
        args = text.splitlines() if "\n" in text else shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"expected arguments as a shell would split them ({exc})") from None
    if "\x00" in text:
        raise ValueError("expected arguments without NUL characters")
    for arg in args:
        flag = arg.lstrip("-").partition("=")[0]
        if arg.startswith("-") and flag in OWNED_FLAGS:
            raise ValueError(f"{arg}: node-agent passes no such flag for you: {OWNED_FLAGS[flag]}")
    return tuple(a for a in args if a)


def flavour(text: str) -> Flavour:
    try:
        return Flavour(text.strip().lower())
    except ValueError:
        raise ValueError("expected auto, v2 or v3") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < value < 10**6:
        raise ValueError("expected a number of seconds above 0")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number (0 for no limit)") from None
    if value < 0:
        raise ValueError("expected a whole number (0 for no limit)")
    return value


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


def deadline(text: str) -> Optional[float]:
    if text.strip() in ("0", "never", "none"):
        return None
    return seconds(text)


def auto_boolean(text: str) -> Optional[bool]:
    return None if text.strip().lower() == "auto" else boolean(text)


def mount_names(text: str) -> tuple[str, ...]:
    names = tuple(w for w in re.split(r"[\s,]+", text) if w)
    for path in names:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(
                "expected paths relative to AZ_BATCH_NODE_MOUNTS_DIR (the pool's "
                "relativeMountPath), without '..'; empty for none"
            )
    return tuple(posixpath.normpath(path) for path in names)


def secret(text: str) -> str:
    if not text or control(text):
        raise ValueError("expected a non-empty single-line secret without control characters")
    return text
