"""Checks of the packages and the executables in them: present, executable, the
shared libraries they need, and really running (blender, ffmpeg, ffprobe); the
GPUs, as the driver and as Blender's Cycles see them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from typing import Optional

from node_agent.bootstrap.libraries import package_for, report, with_packages
from node_agent.bootstrap.survey import TOOL_PACKAGES, locate
from node_agent.bootstrap.worker_ffmpeg import find_bundled
from node_agent.doctor.context import NEEDS_ENV, Context
from node_agent.doctor.report import Row, Status
from node_agent.node.flavour import Flavour
from node_agent.node.gpus import nvidia_gpus, with_gpu_tags
from node_agent.node.layout import WORKER_EXECUTABLE

TOOL_TIMEOUT = 20.0  # seconds for blender --version and friends


def check_packages(ctx: Context) -> list[Row]:
    """Each expected package, its version, the executables in it."""
    if ctx.env is None:
        return [Row("packages", Status.SKIPPED, NEEDS_ENV)]
    tools = ctx.settings.tools if ctx.settings else ("blender", "ffmpeg", "ffprobe")
    wanted = [("flamenco-worker", WORKER_EXECUTABLE)]
    wanted += [(TOOL_PACKAGES.get(tool, tool), tool) for tool in tools]
    rows = []
    for package_id in dict.fromkeys(p for p, _ in wanted):
        package = ctx.env.find_package(package_id)
        if package is None:
            rows.append(
                Row(
                    f"package {package_id}",
                    Status.FAILED,
                    "not on this node",
                    "add it to the pool's applicationPackageReferences",
                )
            )
        elif not os.path.isdir(package.path):
            rows.append(
                Row(
                    f"package {package_id}",
                    Status.FAILED,
                    f"{package.path} does not exist",
                    "Batch could not extract it: check the package zip and the "
                    "node's start-up errors",
                )
            )
        else:
            rows.append(
                Row(
                    f"package {package_id}",
                    Status.OK,
                    f"version {package.version or 'unknown'} at {package.path}",
                )
            )
    for package_id, name in wanted:
        package = ctx.env.find_package(package_id)
        if package is None or not os.path.isdir(package.path):
            continue
        found = locate(package.path, name)
        if found is None:
            rows.append(
                Row(
                    f"executable {name}",
                    Status.FAILED,
                    f"no {name} at the top of {package.path}",
                    f"rebuild the {package_id} zip with {name} at its top level",
                )
            )
        elif not found.state.executable:
            rows.append(
                Row(
                    f"executable {name}",
                    Status.FAILED,
                    f"{found.path} is not executable",
                    "rebuild the zip with the executable bit stored (zip on Linux "
                    "keeps it); node-agent bootstrap fixes files it owns",
                )
            )
        elif found.nested_in:
            rows.append(
                Row(
                    f"executable {name}",
                    Status.FAILED,
                    f"{found.path}: the zip has everything inside {found.nested_in!r} "
                    "(node-agent copes, but the package is built wrong)",
                    f"rebuild the zip from inside {found.nested_in} so files are at its top level",
                )
            )
        else:
            rows.append(Row(f"executable {name}", Status.OK, found.path))
    return rows


def check_tools(ctx: Context) -> list[Row]:
    """The tools really run, through the links on PATH."""
    tools = ctx.settings.tools if ctx.settings else ("blender", "ffmpeg", "ffprobe")
    path = ctx.environ.get("PATH", "")
    rows = []
    for tool in tools:
        flag = "--version" if tool == "blender" else "-version"
        bundled = _worker_ffmpeg(ctx, path) if tool == "ffmpeg" else None
        rows.append(bundled or _run_tool(tool, flag, path))
    return rows


def _worker_ffmpeg(ctx: Context, path: str) -> Optional[Row]:
    """The ffmpeg bundled with a v3 worker, which it runs before PATH; None when there
    is none (the worker then runs the one on PATH)."""
    package = ctx.env.find_package("flamenco-worker") if ctx.env else None
    worker = locate(package.path, WORKER_EXECUTABLE) if package else None
    bundled = find_bundled(worker.path) if worker and ctx.flavour is Flavour.V3 else None
    if bundled is None:
        return None
    rebuild = "rebuild the flamenco-worker package with packaging/build, which leaves it out"
    if not os.access(bundled, os.X_OK):
        return Row(
            "ffmpeg -version",
            Status.FAILED,
            f"{bundled} (bundled, run before PATH) is not executable: every ffmpeg task fails",
            rebuild,
        )
    row = _run_tool(bundled, "-version", path)
    found = f"{bundled} (bundled with the worker, run before PATH): {row.found}"
    if row.status is Status.OK and not row.found.startswith("ffmpeg version "):
        return Row("ffmpeg -version", Status.FAILED, found, "it is not ffmpeg: " + rebuild)
    if row.status is Status.OK and ctx.env and ctx.env.find_package("ffmpeg"):
        return Row(
            "ffmpeg -version",
            Status.WARNING,
            found,
            "the ffmpeg package is not what the worker runs: " + rebuild,
        )
    return replace(row, check="ffmpeg -version", found=found)


def _run_tool(tool: str, flag: str, path: str) -> Row:
    found = shutil.which(tool, path=path)
    name = f"{tool} {flag}"
    if found is None:
        return Row(
            name,
            Status.FAILED,
            f"{tool} is not on PATH",
            "run node-agent bootstrap (it links the tools into the shared dir)",
        )
    try:
        result = subprocess.run(
            [found, flag],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TOOL_TIMEOUT,
            env={"PATH": path},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Row(
            name,
            Status.FAILED,
            f"{found} did not answer within {TOOL_TIMEOUT:.0f} s",
            "run it by hand on the node to see where it hangs",
        )
    except OSError as exc:
        return Row(
            name,
            Status.FAILED,
            f"{found}: {exc.strerror}",
            "check the file is a Linux executable for this CPU",
        )
    first = (result.stdout.strip() or result.stderr.strip()).splitlines()[:1]
    if result.returncode != 0:
        missing = re.findall(r"(lib[\w+.-]+\.so[.\d]*): cannot open shared object", result.stderr)
        packages = sorted({package_for(lib) or lib for lib in missing})
        fix = (
            "install the system libraries it needs (usually "
            f"{' '.join(packages)}) in the pool's image or a custom image"
            if missing
            else "run it by hand on the node to see why it fails"
        )
        detail = result.stderr.strip().splitlines()[:1] or first
        return Row(
            name,
            Status.FAILED,
            f"exit {result.returncode}: {detail[0] if detail else '(no output)'}",
            fix,
        )
    return Row(name, Status.OK, first[0] if first else "(no output)")


def check_libraries(ctx: Context) -> list[Row]:
    """The shared libraries each tool needs: which the system lacks (the loader's
    ``not found``), the package that usually provides each, and whether the tool's
    package brings them."""
    if ctx.env is None:
        return [Row("libraries", Status.SKIPPED, NEEDS_ENV)]
    rows = []
    for tool in ctx.settings.tools if ctx.settings else ("blender", "ffmpeg", "ffprobe"):
        package = ctx.env.find_package(TOOL_PACKAGES.get(tool, tool))
        found = locate(package.path, tool) if package else None
        if found is not None:
            rows.append(_library_row(tool, found.path))
    return rows


def _library_row(tool: str, executable: str) -> Row:
    name = f"libraries {tool}"
    answer = report(executable)
    if answer is None:
        return Row(name, Status.SKIPPED, "no ldd on this node to ask the loader")
    if not answer.dynamic:
        return Row(name, Status.OK, "not dynamically linked (a static build or a script)")
    fix = (
        "bundle them (apt-get download {} on the pool's Ubuntu release, then "
        f"packaging/build-tool {tool} RELEASE --libs DIR), use an image that has them, or "
        "set install_system_packages on a pool whose start task runs as admin"
    )
    unmet = [(lib, by) for lib, by in answer.unmet if lib not in answer.uncovered]
    if not answer.uncovered and unmet:
        needs = ", ".join(f"{lib} (needed by the bundled {by})" for lib, by in unmet)
        packages = " ".join(sorted({package_for(lib) or lib for lib, _ in unmet}))
        return Row(
            name,
            Status.WARNING,
            f"neither the system nor the package has {needs}: loading those at run time fails",
            fix.format(packages),
        )
    exposed = f"; the package brings {', '.join(answer.exposed)}" if answer.exposed else ""
    if not answer.missing:
        unused = f"; the package's {len(answer.bundled)} bundled ones are unused"
        return Row(
            name,
            Status.OK,
            "the system has every library it links"
            + (exposed or (unused if answer.bundled else "")),
        )
    found = f"the system lacks {with_packages(answer.missing)}"
    if not answer.uncovered:
        return Row(name, Status.OK, f"{found}; the package's bundled libraries cover them")
    covered = f"; the package brings {', '.join(answer.covered)}" if answer.covered else ""
    lacking = " ".join(sorted({package_for(lib) or lib for lib in answer.uncovered}))
    return Row(
        name,
        Status.FAILED,
        f"{found}{covered}; not covered: {', '.join(answer.uncovered)}",
        fix.format(lacking),
    )


# What Cycles would render on, asked of Blender itself through the tool's entry on
# PATH (its launcher, libraries and all): the devices of each GPU type the Cycles
# add-on's preferences list on this node.
BLENDER_DEVICES = """
import bpy
prefs = bpy.context.preferences.addons["cycles"].preferences
for kind in ("CUDA", "OPTIX"):
    try:
        names = [d.name for d in prefs.get_devices_for_type(kind) if d.type == kind]
    except Exception as exc:
        names = ["?" + type(exc).__name__]
    print("node-agent-devices", kind, "|".join(names))
"""
DRIVER_FIX = (
    "create the pool with make-pool's gpu: true (the NVIDIA driver extension), and check "
    "the node's extension status (az batch node show ... --query 'extensions' or "
    "/var/log/azure/nvidia-vmext-status)"
)


def _wants_gpu(ctx: Context) -> bool:
    settings = ctx.settings
    device = (settings.cycles_device or "") if settings else ""
    return bool(settings and settings.gpu_tags) or device.split("+")[0] not in ("", "CPU")


def blender_devices(output: str) -> dict[str, tuple[str, ...]]:
    """GPU type -> device names, from the output of ``BLENDER_DEVICES``."""
    found: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        words = line.split(" ", 2)
        if len(words) >= 2 and words[0] == "node-agent-devices":
            names = words[2] if len(words) == 3 else ""
            found[words[1]] = tuple(n for n in names.split("|") if n)
    return found


def _blender_row(path: str) -> Row:
    name = "gpu blender"
    blender = shutil.which("blender", path=path)
    if blender is None:
        return Row(name, Status.SKIPPED, "blender is not on PATH (see its own row)")
    try:
        result = subprocess.run(
            [blender, "-b", "--factory-startup", "--python-expr", BLENDER_DEVICES],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TOOL_TIMEOUT,
            env={"PATH": path},
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        return Row(name, Status.FAILED, f"{blender}: {exc}", "run it by hand on the node")
    devices = blender_devices(result.stdout)
    if not devices:
        said = (result.stderr or result.stdout).strip().splitlines()[-1:]
        return Row(
            name,
            Status.FAILED,
            f"Blender listed no Cycles devices (exit {result.returncode}"
            + (f": {said[0][:200]}" if said else "")
            + ")",
            "run blender -b --python-expr on the node to see why",
        )
    shown = "; ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in sorted(devices.items()))
    if not any(devices.values()):
        return Row(
            name,
            Status.FAILED,
            f"Cycles sees no GPU ({shown}): GPU jobs would fail or render on the CPU",
            "check the driver (the gpus row) and that this Blender supports the GPU",
        )
    return Row(name, Status.OK, shown)


def check_gpus(ctx: Context) -> list[Row]:
    """The NVIDIA driver and its GPUs, what Cycles sees of them (CUDA, OptiX), and
    the GPU tags the worker gets."""
    path = ctx.environ.get("PATH", os.defpath)
    report = nvidia_gpus(path)
    wanted = _wants_gpu(ctx)
    settings = ctx.settings
    rows = []
    if report.gpus:
        gpus = "; ".join(
            g.name + (f" ({g.memory_mib} MiB)" if g.memory_mib else "") for g in report.gpus
        )
        rows.append(Row("gpus", Status.OK, f"NVIDIA {report.driver}: {gpus}"))
        rows.append(_blender_row(path))
    elif report.smi is None and not wanted:
        rows.append(Row("gpus", Status.SKIPPED, f"{report.problem}: not a GPU pool"))
    else:
        expected = " (cycles_device or gpu_tags expects one)" if wanted else ""
        rows.append(Row("gpus", Status.FAILED, f"{report.problem}{expected}", DRIVER_FIX))
    if settings is not None and settings.gpu_tags:
        tags = with_gpu_tags(settings.worker_tags, settings.gpu_tags, report)
        added = report.gpus and ", ".join(settings.gpu_tags)
        rows.append(
            Row(
                "gpu tags",
                Status.OK if report.gpus else Status.WARNING,
                (f"adds {added}" if added else "adds none (no GPU)")
                + f": a new registration gets {', '.join(tags) or 'no tags'}",
                None if report.gpus else DRIVER_FIX,
            )
        )
    return rows
