"""The ffmpeg a v3 worker really runs.

The worker looks beside its own executable first: ``tools/ffmpeg-linux-<arch>``
(Go's architecture names: ``amd64``, ``arm64``), ``tools/ffmpeg-linux``,
``tools/ffmpeg``, and only then on ``PATH``. A bundled file that exists but is not
executable is an error for it, with no fallback to ``PATH``. The official Linux
release ships ``tools/ffmpeg-linux-amd64``, so a package built from it runs that
ffmpeg, not the operator's ``ffmpeg`` package linked onto ``PATH``; ``packaging/build``
leaves it out unless asked to keep it.
"""

from __future__ import annotations

import os
import platform
from typing import Optional

GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def bundled_names(machine: Optional[str] = None) -> tuple[str, ...]:
    """The bundled ffmpeg paths the worker tries, relative to its own directory, in
    its order (pure, given the machine name)."""
    machine = (machine or platform.machine()).lower()
    arch = GO_ARCH.get(machine, machine)
    return (f"tools/ffmpeg-linux-{arch}", "tools/ffmpeg-linux", "tools/ffmpeg")


def find_bundled(worker_executable: str) -> Optional[str]:
    """The bundled ffmpeg the worker at this path would run (it exists, executable or
    not), or None when it would look on ``PATH``."""
    here = os.path.dirname(worker_executable)
    for name in bundled_names():
        path = os.path.join(here, name)
        if os.path.lexists(path):
            return path
    return None
