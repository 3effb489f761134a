"""The flamenco-worker package as the tests build it: packaging/build run as an
operator runs it, with bytecode for every node python3 the tests run it with."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "packaging" / "build"
STANDIN_WORKER = REPO / "packaging" / "standin-worker"


def build_package(worker: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``packaging/build --worker WORKER --out OUT OPTIONS``."""
    return subprocess.run(
        [sys.executable, str(BUILD), "--worker", str(worker), "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _interpreters() -> list[str]:
    """The machine's system python3, plus any real 3.9 or 3.12 interpreter installed
    (pyenv's versions here): each must run the packaged agent."""
    candidates = [shutil.which("python3", path="/usr/bin:/bin") or "python3"]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.9*/bin/python3"))
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3"))
    return [
        c
        for c in candidates
        if subprocess.run([c, "-c", "pass"], capture_output=True, check=False).returncode == 0
    ]


PYTHONS = _interpreters()
# Bytecode for every node python3 the tests run the package with.
WITH_BYTECODE = tuple(option for python in PYTHONS for option in ("--python", python))
