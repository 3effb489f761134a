"""The tool-package builder on a Blender-sized release: ``python -m bench.build``.

The benchmark makes its own release, laid out like Blender 4.2's for Linux: about
1 GB unpacked, thousands of files and links (a large executable, large and small
shared libraries each with its soname links, a Python with its standard library,
add-on scripts, data files, a link to a folder). Its binaries' bytes are taken
from this machine's own shared libraries and its scripts are this Python's
standard library, so that they compress as real ones do (synthetic bytes deflate
at unrealistic speeds). GNU tar packs it (in directory order, as releases are)
and ``xz -0`` compresses it into one block, as single-threaded xz does.

Then, in the same run, the figures to compare: ``tar -xf`` followed by ``zip -qr``
of the unpacked release (the baseline: what an operator would do by hand, and
which materialises symlinks the same way), and ``packaging/build-tool blender``
on the archive: wall time and peak resident memory of each. Not a test: nothing
here passes or fails.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Optional

BUILD_TOOL = Path(__file__).resolve().parent.parent / "packaging" / "build-tool"
TOP = "blender-4.2.3-linux-x64"
MIB = 1 << 20
SEED_BYTES = 96 * MIB  # distinct binary material: far beyond any compressor's window
# The release's large files (MiB), as Blender 4.2 has them: the executable and
# the biggest of its libraries (Cycles' GPU kernels, denoiser, USD, ...).
LARGE = {
    "blender": 200,
    "lib/libcycles_kernel_oneapi_aot.so": 230,
    "lib/libOpenImageDenoise_device_cuda.so.2.3.0": 90,
    "lib/libOpenImageDenoise_device_hip.so.2.3.0": 60,
    "lib/libusd_ms.so": 45,
    "lib/libembree4.so.4": 40,
    "lib/libopenvdb.so.11.0": 25,
}


def _seed() -> bytes:
    """This machine's own shared libraries, concatenated (up to ``SEED_BYTES``)."""
    parts, total = [], 0
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        for path in sorted(Path(folder).glob("*.so*")) if Path(folder).is_dir() else []:
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if data[:4] == b"\x7fELF":
                parts.append(data)
                total += len(data)
            if total >= SEED_BYTES:
                return b"".join(parts)[:SEED_BYTES]
    raise SystemExit("bench.build: too few shared libraries here to make binaries of")


def _scripts() -> list[Path]:
    """This Python's standard library sources (not its site-packages)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts and p.is_file())


class Maker:
    """Writes the release's files from the seed material."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.seed = _seed()
        self.scripts = _scripts()
        self.rng = random.Random(42)
        self.files = self.links = self.bytes = 0

    def binary(self, name: str, size: int, mode: int = 0o755) -> None:
        """A binary of ``size`` bytes: runs of the seed from random places."""
        path = self.top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            left = size
            while left:
                start = self.rng.randrange(len(self.seed) - MIB)
                piece = self.seed[start : start + min(left, MIB)]
                out.write(piece)
                left -= len(piece)
        path.chmod(mode)
        self.files += 1
        self.bytes += size

    def script(self, name: str, index: int) -> None:
        """A text file: one of the standard library's sources."""
        path = self.top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        source = self.scripts[index % len(self.scripts)]
        shutil.copyfile(source, path)
        self.files += 1
        self.bytes += path.stat().st_size

    def link(self, name: str, target: str) -> None:
        """A symlink, as the release has it."""
        path = self.top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        self.links += 1


def make_release(folder: Path) -> Maker:
    """The unpacked release in ``folder/TOP``."""
    maker = Maker(folder / TOP)
    for name, mib in LARGE.items():
        maker.binary(name, mib * MIB)
    for i in range(90):  # the smaller libraries, each with its soname links
        real = f"lib/libdep{i:02d}.so.{i % 7}.{i % 3}.0"
        maker.binary(real, maker.rng.randint(64 << 10, 4 * MIB), 0o644)
        maker.link(f"lib/libdep{i:02d}.so.{i % 7}", real.rsplit("/", 1)[1])
        maker.link(f"lib/libdep{i:02d}.so", f"libdep{i:02d}.so.{i % 7}")
    python = "4.2/python"
    maker.binary(f"{python}/bin/python3.11", 8 * MIB)
    maker.link(f"{python}/bin/python3", "python3.11")
    stdlib = f"{python}/lib/python3.11"
    for i in range(120):
        maker.binary(f"{stdlib}/lib-dynload/_mod{i:03d}.cpython-311-x86_64-linux-gnu.so", 200_000)
    base = Path(sysconfig.get_paths()["stdlib"])
    for i, source in enumerate(maker.scripts[:4000]):
        maker.script(f"{stdlib}/{source.relative_to(base)}", i)
    for i in range(2500):  # add-ons
        maker.script(f"4.2/scripts/addons_core/addon{i // 25:03d}/part{i % 25:02d}.py", 4000 + i)
    for i in range(800):  # old add-on paths kept as links to the new ones
        addon, part = divmod(i, 8)
        maker.link(
            f"4.2/scripts/addons/legacy{addon:03d}/part{part:02d}.py",
            f"../../addons_core/addon{addon:03d}/part{part:02d}.py",
        )
    for i in range(12):
        maker.binary(f"4.2/datafiles/fonts/font{i:02d}.woff2", 3 * MIB, 0o644)
    for i in range(600):
        maker.binary(f"4.2/datafiles/icons/icon{i:03d}.dat", 20_000, 0o644)
    for i in range(200):
        maker.script(f"4.2/datafiles/colormanagement/luts/lut{i:03d}.spi1d", 7000 + i)
    maker.link("4.2/datafiles/colormanagement/filmic", "luts")  # a link to a folder
    return maker


# Runs a command and reports its wall time and peak memory. A process of its own,
# and a small one: a child's peak resident memory starts at its parent's memory
# at the fork, which for this benchmark's process (the release's bytes) is large.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], "wb") as log:
    child = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(child.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def _measured(argv: list[str], log: Path, cwd: Optional[Path] = None) -> tuple[float, float]:
    """Wall seconds and peak resident MiB (of the command and all it waited for)."""
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(log), str(cwd or Path.cwd()), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    wall, peak, code = result.stdout.split()
    if int(code) != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise SystemExit("\n".join([f"bench.build: {argv} failed ({code}):", *tail]))
    return float(wall), int(peak) / 1024


def release(work: Path) -> Path:
    """The release archive in ``work`` (made unless there from an earlier run)."""
    archive = work / f"{TOP}.tar.xz"
    if archive.exists():
        print(f"release: {archive} (from an earlier run), {archive.stat().st_size / MIB:.0f} MiB")
        return archive
    start = time.perf_counter()
    maker = make_release(work / "release")
    with (work / "partial.tar.xz").open("wb") as out:
        tar = subprocess.Popen(
            ["tar", "-C", str(work / "release"), "-cf", "-", TOP], stdout=subprocess.PIPE
        )
        subprocess.run(["xz", "-0", "-T1", "-c"], stdin=tar.stdout, stdout=out, check=True)
        tar.wait()
    (work / "partial.tar.xz").rename(archive)
    shutil.rmtree(work / "release")
    print(
        f"release: {maker.files} files, {maker.links} links, {maker.bytes / MIB:.0f} MiB "
        f"unpacked, {archive.stat().st_size / MIB:.0f} MiB as .tar.xz "
        f"(made in {time.perf_counter() - start:.0f} s)"
    )
    return archive


def compare(work: Path, archive: Path, rounds: int, tool: Path) -> None:
    """Both ways to a package, ``rounds`` times each; the best of each printed."""
    baseline, built = [], []
    for _ in range(rounds):
        unpacked = work / "unpacked"
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.mkdir()
        untar = _measured(["tar", "-xf", str(archive), "-C", str(unpacked)], work / "tar.log")
        zipped = _measured(
            ["zip", "-qr", str(work / "base.zip"), "."], work / "zip.log", unpacked / TOP
        )
        baseline.append((untar[0] + zipped[0], max(untar[1], zipped[1])))
        shutil.rmtree(unpacked)
        base_size = (work / "base.zip").stat().st_size
        (work / "base.zip").unlink()
        argv = [sys.executable, str(tool), "blender", str(archive)]
        built.append(_measured([*argv, "--out", str(work / "blender.zip")], work / "build.log"))
        size = (work / "blender.zip").stat().st_size
        (work / "blender.zip").unlink()
    (base_wall, base_rss), (wall, rss) = min(baseline), min(built)
    for what, seconds, peak, zipped in (
        ("tar -xf + zip -qr", base_wall, base_rss, base_size),
        ("build-tool", wall, rss, size),
    ):
        print(f"{what:18} {seconds:6.1f} s, peak {peak:4.0f} MiB, zip {zipped / MIB:.0f} MiB")
    print(f"ratio: {wall / base_wall:.2f}x the baseline's wall time (goal: 1.2x at most)")


def main() -> None:
    """Make the release, time both ways to a package, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, help="where to work, and keep the release for the next run"
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each way (best kept)")
    parser.add_argument(
        "--tool", type=Path, default=BUILD_TOOL, help="the build-tool to time (another version's)"
    )
    args = parser.parse_args()
    for tool in ("tar", "xz", "zip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.build: needs the {tool} command")
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        compare(args.dir, release(args.dir), args.rounds, args.tool)
        return
    with tempfile.TemporaryDirectory(prefix="bench-build-") as work:
        compare(Path(work), release(Path(work)), args.rounds, args.tool)


if __name__ == "__main__":
    main()
