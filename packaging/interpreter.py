"""The packaging scripts' Python: the one they were started on if it has what they
need, else the checkout's own environment (``.venv``, which ``./dev`` makes), else
one message saying what is missing and how to get it (exit 3, no traceback).

The scripts start with ``#!/usr/bin/env python3``: whatever ``python3`` comes first on
``PATH``, usually the system's, which lacks psutil or PyYAML on a fresh machine. A
script calls ``require`` before importing any of them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
EXIT_INVALID = 3  # node_agent.common.errors.EXIT_INVALID (not importable yet)
# Standard modules a Python may be built without: no package installs them.
BUILT_IN = {
    "lzma": "a Python built without liblzma cannot read .tar.xz releases: use the "
    "system's python3 (Debian and Ubuntu build it in), or install liblzma-dev "
    "(xz-devel) and build this Python again",
}


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` this Python cannot import."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require(script: str, *modules: str) -> None:
    """Go on if this Python has ``modules``; else run ``script`` again, with the same
    arguments, on the checkout's ``.venv`` (once: never from that venv itself);
    else say what is missing and exit 3."""
    lacking = missing(modules)
    if not lacking:
        return
    python = VENV / "bin" / "python"
    name = Path(script).name
    here = f"{sys.executable} (Python {sys.version.split()[0]})"
    for module in lacking:
        if module in BUILT_IN:
            print(f"{name}: {here} lacks {module}: {BUILT_IN[module]}", file=sys.stderr)
            sys.exit(EXIT_INVALID)
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if python.exists() and not in_venv:
        print(f"{name}: {here} lacks {', '.join(lacking)}; running on {python}", file=sys.stderr)
        sys.stderr.flush()
        os.execv(python, [str(python), str(Path(script).resolve()), *sys.argv[1:]])
    print(
        f"{name}: needs {', '.join(lacking)}, which {here} lacks. Either run "
        f"`./dev main` once in {REPO} (it makes the checkout's .venv, which {name} "
        f"then runs on by itself), or install node-agent and its dependencies into this "
        f"Python: {sys.executable} -m pip install '{REPO}[fleet]'",
        file=sys.stderr,
    )
    sys.exit(EXIT_INVALID)
