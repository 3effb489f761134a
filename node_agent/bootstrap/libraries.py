"""Shared libraries a tool needs: which ones the node's system lacks, and which of
those the tool's package brings in its private folder.

The official Blender build needs X11/GL libraries that stock server images lack.
A non-admin start task cannot install them, so the package can carry them in
``_system_libs/`` (``packaging/build-tool --libs``). The loader itself is asked
what it cannot find, with the system's search path alone: ``ldd`` for what the tool
links; and, for every bundled library, whether the loader finds it by its soname
(``LD_PRELOAD`` in the loader's trace mode, which loads nothing). Every bundled
library the system lacks is put on the tool's loader path, whatever the tool links:
Blender loads GL and EGL at run time (libepoxy ``dlopen``s them), which ``ldd`` of
the binary never shows. Only those: ``LD_LIBRARY_PATH`` is searched before the
system's own directories, so a bundled library the system has would hide the
system's (an NVIDIA driver's ``libGL``). Each exposed library's own needs are asked
of ``ldd`` too, to name what neither the system nor the package has.
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
_FOUND = re.compile(r"^\s*(\S+) => /", re.MULTILINE)
_INTERPRETER = re.compile(r"^\s*(/\S+) \(0x[0-9a-fA-F]+\)\s*$", re.MULTILINE)
_NOT_DYNAMIC = ("not a dynamic executable", "statically linked")
_PRELOADABLE = re.compile(r"[^\s:]+")  # LD_PRELOAD splits on spaces and colons


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


def interpreter_of(output: str) -> Optional[str]:
    """The dynamic loader ``ldd`` shows (``/lib64/ld-linux-x86-64.so.2``), if any."""
    match = _INTERPRETER.search(output)
    return match.group(1) if match else None


def found_by_loader(output: str) -> frozenset[str]:
    """The names the loader's trace found a file for (``name => /path``)."""
    return frozenset(_FOUND.findall(output))


def _system_run(command: list[str], extra: Optional[dict[str, str]] = None) -> Optional[str]:
    """The output of ``command`` with the system's search path alone (no
    ``LD_LIBRARY_PATH`` or ``LD_PRELOAD`` of ours); None when it cannot run or hangs."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            env={**environ, **(extra or {})},
            timeout=LDD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout + result.stderr


def _ldd(path: str) -> Optional[str]:
    """``ldd path``'s output with the system's search path alone; None when there is
    no ldd (or it hangs)."""
    ldd = shutil.which("ldd") or shutil.which("ldd", path="/usr/bin:/bin")
    return _system_run([ldd, path]) if ldd else None


def _lacking(loader: str, executable: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Which of ``names`` the system's loader cannot find for ``executable`` (its
    own ``RUNPATH`` included): each is preloaded in the loader's trace mode, which
    maps nothing and runs nothing, and those with no file are lacking."""
    asked = tuple(n for n in names if _PRELOADABLE.fullmatch(n))
    if not asked:
        return ()
    extra = {"LD_TRACE_LOADED_OBJECTS": "1", "LD_PRELOAD": " ".join(asked)}
    output = _system_run([loader, executable], extra)
    if output is None:
        return ()  # cannot tell: only what ldd shows missing goes on the path
    found = found_by_loader(output)
    return tuple(n for n in asked if n not in found)


@dataclass(frozen=True)
class LibraryReport:
    """What the loader says about one executable on this node."""

    dynamic: bool
    missing: tuple[str, ...]  # the executable needs them, and the system lacks them
    bundled: tuple[str, ...]  # in the package's _system_libs (empty when none)
    bundle_dir: Optional[str]
    lacking: tuple[str, ...] = ()  # bundled, and the system's loader finds no such library
    # (library, the exposed bundled one that needs it): neither the system nor the
    # package has it, so whatever loads that bundled library at run time fails.
    unmet: tuple[tuple[str, str], ...] = ()

    @property
    def covered(self) -> tuple[str, ...]:
        """Missing from the system, and in the package: to put on the loader's path."""
        return tuple(lib for lib in self.missing if lib in self.bundled)

    @property
    def uncovered(self) -> tuple[str, ...]:
        """Missing from the system and from the package: the tool will not start."""
        return tuple(lib for lib in self.missing if lib not in self.bundled)

    @property
    def exposed(self) -> tuple[str, ...]:
        """Bundled libraries to put on the loader's path: every one the system lacks,
        linked or loaded at run time."""
        return tuple(dict.fromkeys((*self.covered, *self.lacking)))


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
    dynamic, found_missing = parse_ldd(first)
    missing = list(found_missing)
    loader = interpreter_of(first)
    lacking: tuple[str, ...] = ()
    if bundle and dynamic:
        lacking = _lacking(loader, executable, bundled) if loader else ()
    # A bundled library the loader will take from the package may need others the
    # system lacks too: ask about each one, with the system alone.
    unmet: list[tuple[str, str]] = []
    queue = sorted({*lacking, *(lib for lib in missing if lib in bundled)})
    asked: set[str] = set()
    while queue and bundle is not None:
        library = queue.pop()
        if library in asked:
            continue
        asked.add(library)
        output = _ldd(os.path.join(bundle, library))
        for needed in parse_ldd(output)[1] if output else ():
            if needed in bundled:
                queue.append(needed)
            elif (needed, library) not in unmet:
                unmet.append((needed, library))
            if library in missing and needed not in missing:
                missing.append(needed)  # the executable needs it through the bundled one
    return LibraryReport(dynamic, tuple(missing), bundled, bundle, lacking, tuple(unmet))
