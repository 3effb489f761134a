"""Libraries a program loads at run time (``dlopen``, as Blender's libepoxy loads GL
and EGL), with the real loader: a program built here with the system C compiler
links one library and ``dlopen``s another (which needs a third); all three come from
a ``.deb`` given to ``build-tool --libs``, each bundled once under its soname. On a
bootstrapped node the program runs through the shared ``PATH`` and finds all of
them. In a private mount namespace, a real system library (libX11) is hidden from
the loader the way a stock node lacks it, bundled, and ``dlopen``ed the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from node_agent import doctor
from node_agent.doctor import Status
from tests.helpers import needs_mount_namespace
from tests.nodes import TestNode, make_node
from tests.releases import Spec, build_tool, write_deb, write_tar

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(
    CC is None, reason="no C compiler (cc or gcc) here: the test builds real libraries"
)
TOP = "blender-4.2.3-linux-x64"
LIB = "./usr/lib/x86_64-linux-gnu"
GREET, PLUGIN, DEP = "libnodeagentgreet.so.1", "libnodeagentplugin.so.1", "libnodeagentdep.so.1"
X11 = "libX11.so.6"
MAIN_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
const char *greeting(void);
int main(int argc, char **argv) {
    void *plugin = dlopen("libnodeagentplugin.so.1", RTLD_NOW);
    if (!plugin) { fprintf(stderr, "%s\n", dlerror()); return 3; }
    const char *(*hello)(void) = (const char *(*)(void))dlsym(plugin, "plugin_hello");
    printf("%s; %s", greeting(), hello());
    if (argc > 1 && strcmp(argv[1], "--x11") == 0) {
        void *x11 = dlopen("libX11.so.6", RTLD_NOW);
        if (!x11) { fprintf(stderr, "%s\n", dlerror()); return 4; }
        printf("; XOpenDisplay %s", dlsym(x11, "XOpenDisplay") ? "found" : "missing");
    }
    printf("\n");
    return 0;
}
"""


def _cc(*args: object) -> None:
    assert CC is not None
    subprocess.run([CC, *map(str, args)], check=True, capture_output=True, timeout=120)


def _system_x11() -> Optional[Path]:
    """The system's libX11 file, when this machine has one."""
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64"):
        link = Path(folder, X11)
        if link.exists():
            return link.resolve()
    return None


@dataclass(frozen=True)
class Built:
    release: Path
    deb: Path  # the three libraries, as a .deb installs them
    where: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    where = tmp_path_factory.mktemp("dlopen")
    (where / "greet.c").write_text('const char *greeting(void) { return "linked"; }\n')
    (where / "dep.c").write_text('const char *dep(void) { return "its dependency"; }\n')
    (where / "plugin.c").write_text(
        "const char *dep(void);\n"
        'const char *plugin_hello(void) { return dep()[0] ? "loaded with dlopen, and '
        'its dependency" : ""; }\n'
    )
    (where / "main.c").write_text(MAIN_C)
    out = where / "libs"
    out.mkdir()
    for name, source, extra in (
        (GREET, "greet.c", ()),
        (DEP, "dep.c", ()),
        (PLUGIN, "plugin.c", (out / f"{DEP}.0.0",)),
    ):
        _cc(
            "-shared",
            "-fPIC",
            f"-Wl,-soname,{name}",
            "-o",
            out / f"{name}.0.0",
            where / source,
            *extra,
        )
    program = where / "blender"
    _cc("-o", program, where / "main.c", out / f"{GREET}.0.0", "-ldl")
    members: dict[str, Spec] = {"./usr/": None}
    for name in (GREET, PLUGIN, DEP):
        members[f"{LIB}/{name}.0.0"] = (out / f"{name}.0.0").read_bytes()
        members[f"{LIB}/{name}"] = f"->{name}.0.0"
    deb = write_deb(where / "libnodeagent1_1.0_amd64.deb", members)
    release = write_tar(
        where / f"{TOP}.tar.xz",
        {f"{TOP}/blender": (program.read_bytes(), 0o755), f"{TOP}/4.2/README": b"data\n"},
    )
    return Built(release, deb, where)


def _package(built: Built, out: Path, *libs: Path) -> Path:
    args = [a for lib in libs for a in ("--libs", lib)]
    result = build_tool("blender", built.release, *args, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _node_script(node: TestNode, env_file: Path, *blender_args: str) -> list[str]:
    """Bootstrap the node, then run blender as the worker finds it, in one process
    tree (so that a namespace around it holds for both)."""
    return [
        "sh",
        "-c",
        '"$0" -m node_agent bootstrap --env-file "$1" >&2 && shift && exec blender "$@"',
        sys.executable,
        str(env_file),
        *blender_args,
    ]


def _run(command: list[str], node: TestNode) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": node.environ["PATH"]},
    )


def test_libraries_loaded_at_run_time_are_found_through_path(built: Built, tmp_path: Path) -> None:
    package = _package(built, tmp_path / "blender.zip", built.deb)
    with zipfile.ZipFile(package) as archive:
        libs = sorted(n for n in archive.namelist() if n.startswith("_system_libs/"))
    assert libs == [f"_system_libs/{n}" for n in sorted((DEP, GREET, PLUGIN))]  # one copy each

    node = make_node(tmp_path / "root", "newer_spot", zips={"blender": package})
    ran = _run(_node_script(node, node.env_file(tmp_path / "node.env")), node)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "linked; loaded with dlopen, and its dependency\n"
    [libs_dir] = (node.shared / ".node-agent/libs").iterdir()
    assert sorted(os.listdir(libs_dir)) == sorted((DEP, GREET, PLUGIN))
    rows = {row.check: row for row in doctor.run_checks(node.environ)}
    assert rows["libraries blender"].status is Status.OK


def test_doctor_names_what_a_run_time_library_needs_and_nobody_has(
    built: Built, tmp_path: Path
) -> None:
    # The plugin without its dependency: the program starts, its dlopen fails.
    folder = tmp_path / "libs"
    folder.mkdir()
    for name in (GREET, PLUGIN):
        shutil.copy(built.where / "libs" / f"{name}.0.0", folder / name)
    package = _package(built, tmp_path / "blender.zip", folder)
    node = make_node(tmp_path / "root", "newer_spot", zips={"blender": package})
    ran = _run(_node_script(node, node.env_file(tmp_path / "node.env")), node)
    assert ran.returncode == 3 and f"{DEP}: cannot open shared object file" in ran.stderr
    row = {row.check: row for row in doctor.run_checks(node.environ)}["libraries blender"]
    assert row.status is Status.WARNING
    assert f"{DEP} (needed by the bundled {PLUGIN})" in row.found
    assert row.fix is not None and "packaging/build-tool blender" in row.fix


def test_a_hidden_system_library_is_bundled_and_loaded_at_run_time(
    built: Built, tmp_path: Path
) -> None:
    needs_mount_namespace()
    x11 = _system_x11()
    if x11 is None:
        pytest.skip(f"no {X11} on this machine to hide from the loader")
    x11_deb = write_deb(
        tmp_path / "libx11-6_1.8.4-2_amd64.deb",
        {f"{LIB}/{x11.name}": x11.read_bytes(), f"{LIB}/{X11}": f"->{x11.name}"},
    )
    package = _package(built, tmp_path / "blender.zip", built.deb, x11_deb)
    node = make_node(tmp_path / "root", "newer_spot", zips={"blender": package})
    # The system's library folder as a stock node has it: every entry but libX11,
    # each a link into the real folder, bind-mounted elsewhere in the namespace.
    folder = x11.parent
    farm, real = tmp_path / "farm", tmp_path / "real"
    farm.mkdir()
    real.mkdir()
    for name in os.listdir(folder):
        if not name.startswith("libX11.so"):
            os.symlink(real / name, farm / name)
    hide = f'mount --bind "{folder}" "{real}" && mount --bind "{farm}" "{folder}" && exec "$@"'
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, "sh"]
    command += _node_script(node, node.env_file(tmp_path / "node.env"), "--x11")
    ran = _run(command, node)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "linked; loaded with dlopen, and its dependency; XOpenDisplay found\n"
    [libs_dir] = (node.shared / ".node-agent/libs").iterdir()
    assert X11 in os.listdir(libs_dir)
    # Outside the namespace the system has libX11 again: the launcher's folder moves
    # to one without it, so the bundled copy never shadows the system's.
    again = _run(_node_script(node, node.env_file(tmp_path / "node.env"), "--x11"), node)
    assert again.returncode == 0, again.stderr
    [libs_dir] = (node.shared / ".node-agent/libs").iterdir()
    assert sorted(os.listdir(libs_dir)) == sorted((DEP, GREET, PLUGIN))
