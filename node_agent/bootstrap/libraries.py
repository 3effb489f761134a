"""Shared libraries a tool needs: which ones the node's system lacks, and which of
those the tool's package brings in its private folder.

The official Blender build needs X11/GL libraries that stock server images lack.
A non-admin start task cannot install them, so the package can carry them in
``_system_libs/`` (``packaging/build-tool --libs``). The loader is asked, through
``ldd``, what it cannot find: first for the tool with the system alone, then for
each bundled library it would have to take from the package (whose own needs the
first answer could not show). Only those libraries are put on the tool's loader
path, so a bundled library never hides one the system has (``LD_LIBRARY_PATH`` is
searched before the system's own directories).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional

SYSTEM_LIBS_DIR = "_system_libs"  # the package's private folder of libraries
LDD_TIMEOUT = 10.0

# Libraries Blender needs that minimal Linux images lack, and the Debian/Ubuntu
# packages that provide them.
LIBRARY_PACKAGES = {
    "libX11.so.6": "libx11-6",
    "libXi.so.6": "libxi6",
    "libXxf86vm.so.1": "libxxf86vm1",
    "libXfixes.so.3": "libxfixes3",
    "libXrender.so.1": "libxrender1",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libXext.so.6": "libxext6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libbsd.so.0": "libbsd0",
    "libmd.so.0": "libmd0",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libOpenGL.so.0": "libopengl0",
    "libwayland-client.so.0": "libwayland-client0",
    "libdecor-0.so.0": "libdecor-0-0",
}

_NOT_FOUND = re.compile(r"^\s*(\S+) => not found\s*$", re.MULTILINE)
_NOT_DYNAMIC = ("not a dynamic executable", "statically linked")


def package_for(library: str) -> Optional[str]:
    """The Debian/Ubuntu package that usually provides ``library``, when known."""
    return LIBRARY_PACKAGES.get(library)


def with_packages(libraries: tuple[str, ...]) -> str:
    """``libXi.so.6 (libxi6), libfoo.so.1`` for a message."""
    return ", ".join(
        f"{lib} ({package_for(lib)})" if package_for(lib) else lib for lib in libraries
    )


def parse_ldd(output: str) -> tuple[bool, tuple[str, ...]]:
    """Whether ``ldd`` saw a dynamically linked file, and the libraries the loader
    reported ``not found``, in its order."""
    if any(marker in output for marker in _NOT_DYNAMIC):
        return False, ()
    return True, tuple(dict.fromkeys(_NOT_FOUND.findall(output)))


def _ldd(path: str) -> Optional[tuple[bool, tuple[str, ...]]]:
    """``parse_ldd`` of ``ldd path`` with the system's search path alone; None when
    there is no ldd (or it hangs)."""
    ldd = shutil.which("ldd") or shutil.which("ldd", path="/usr/bin:/bin")
    if ldd is None:
        return None
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    try:
        result = subprocess.run(
            [ldd, path],
            capture_output=True,
            text=True,
            errors="replace",
            env=environ,
            timeout=LDD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_ldd(result.stdout + result.stderr)


@dataclass(frozen=True)
class LibraryReport:
    """What the loader says about one executable on this node."""

    dynamic: bool
    missing: tuple[str, ...]  # needed, and not on the system
    bundled: tuple[str, ...]  # in the package's _system_libs (empty when none)
    bundle_dir: Optional[str]

    @property
    def covered(self) -> tuple[str, ...]:
        """Missing from the system, and in the package: to put on the loader's path."""
        return tuple(lib for lib in self.missing if lib in self.bundled)

    @property
    def uncovered(self) -> tuple[str, ...]:
        """Missing from the system and from the package: the tool will not start."""
        return tuple(lib for lib in self.missing if lib not in self.bundled)


def bundle_of(executable: str) -> Optional[str]:
    """The package's private folder of libraries beside ``executable``, if any."""
    folder = os.path.join(os.path.dirname(executable), SYSTEM_LIBS_DIR)
    return folder if os.path.isdir(folder) else None


def report(executable: str) -> Optional[LibraryReport]:
    """What the loader cannot find for ``executable`` on this node, and what of that
    its package brings; None when there is no ``ldd`` to ask."""
    bundle = bundle_of(executable)
    try:
        bundled = tuple(sorted(os.listdir(bundle))) if bundle else ()
    except OSError:
        bundled = ()
    first = _ldd(executable)
    if first is None:
        return None
    dynamic, found_missing = first
    missing = list(found_missing)
    # A bundled library the loader will take from the package may need others the
    # system lacks too: ask about each one, with the system alone.
    queue = [lib for lib in missing if lib in bundled]
    while queue and bundle is not None:
        answer = _ldd(os.path.join(bundle, queue.pop()))
        for lib in answer[1] if answer else ():
            if lib not in missing:
                missing.append(lib)
                if lib in bundled:
                    queue.append(lib)
    return LibraryReport(dynamic, tuple(missing), bundled, bundle)
