"""The package builders as an operator meets them: their help, progress on a
terminal and in a log, Ctrl-C and SIGTERM (one line, exit 128+n, nothing left
behind), and an output folder they cannot write named as given."""

from __future__ import annotations

import io
import os
import pty
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from progress import Progress

from tests.helpers import wait_until
from tests.packages import BUILD, STANDIN_WORKER
from tests.releases import BUILD_TOOL, Spec, build_tool, write_tar

TOP = "blender-4.2.3-linux-x64"
BLENDER: dict[str, Spec] = {
    f"{TOP}/blender": (b"#!/bin/sh\necho 'Blender 4.2.3'\n", 0o755),
    **{f"{TOP}/4.2/datafiles/file{i}": b"data\n" * i for i in range(20)},
}


def _help(command: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(command), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())  # argparse wraps to the terminal's width


def test_help_gives_defaults_repeats_exit_codes_and_an_example() -> None:
    tool = _help(BUILD_TOOL)
    for expected in (
        "--libs DEB_OR_DIR",
        "(repeat it for more; default: none)",
        "--version VERSION the application package version (default: read from the release's",
        "--out FILE the zip to write; its folder is made if missing and holds the build's "
        "temporary files (default: dist/ID-VERSION.zip",
        "exit codes: 0 built",
        "3 the input cannot be built",
        "130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM",
        "example: packaging/build-tool blender blender-4.2.3-linux-x64.tar.xz --libs debs/",
    ):
        assert expected in tool, expected
    build = _help(BUILD)
    for expected in (
        "--worker RELEASE the Flamenco release as downloaded (flamenco-3.x-linux-amd64.tar.gz)",
        "(default: dist/flamenco-worker.zip in the repository)",
        "repeat it for both (default: x86_64)",
        "--python PYTHON",
        "repeat it for more (default: none)",
        "exit codes: 0 built",
        "example: packaging/build --worker flamenco-3.6-linux-amd64.tar.gz",
    ):
        assert expected in build, expected


def test_progress_is_a_bar_on_a_terminal(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            str(BUILD_TOOL),
            "blender",
            str(release),
            "--out",
            str(tmp_path / "b.zip"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: every writer is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = shown.decode()
    assert f"\runpacking {release.name}: [" in text and "100% " in text
    assert "\rwriting b.zip: [" in text
    assert "Traceback" not in text


def test_progress_is_a_line_every_few_seconds_in_a_log() -> None:
    log = io.StringIO()
    now = [100.0]
    progress = Progress("build-tool", log, clock=lambda: now[0])
    progress.step("unpacking blender.tar.xz", 4 << 20)
    for second, done in ((1, 1 << 20), (5, 2 << 20), (7, 3 << 20), (10, 4 << 20)):
        now[0] = 100.0 + second
        progress.update(done)
    progress.done()
    assert log.getvalue().splitlines() == [
        "build-tool: unpacking blender.tar.xz: 50% (2.0 MiB of 4.0 MiB), 0:05",
        "build-tool: unpacking blender.tar.xz: 100% (4.0 MiB of 4.0 MiB), 0:10",
    ]


@pytest.fixture(scope="module")
def large_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release whose build takes a while: 96 MiB that deflate cannot shrink."""
    folder = tmp_path_factory.mktemp("large")
    members: dict[str, Spec] = dict(BLENDER)
    members.update({f"{TOP}/noise{i}.bin": os.urandom(8 << 20) for i in range(12)})
    return write_tar(folder / f"{TOP}.tar", members)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_build_tool_leaves_nothing_behind(
    tmp_path: Path, large_release: Path, signum: signal.Signals
) -> None:
    out = tmp_path / "dist" / "blender.zip"
    process = subprocess.Popen(
        [sys.executable, str(BUILD_TOOL), "blender", str(large_release), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Stopped in the midst of it: once the release's files are being deflated.
    packed = wait_until(
        lambda: [p for p in out.parent.glob(".build-tool-*/packed") if p.stat().st_size], 60
    )
    assert packed and process.poll() is None
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert err.splitlines()[-1:] == [f"build-tool: stopped by {signum.name}; nothing was written"]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # not even the folder it made for --out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_worker_build_leaves_nothing_behind(
    tmp_path: Path, signum: signal.Signals
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "dist" / "flamenco-worker.zip"
    process = subprocess.Popen(
        [sys.executable, str(BUILD), "--worker", str(STANDIN_WORKER), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    builder = psutil.Process(process.pid)

    def pip() -> list[psutil.Process]:
        found = []
        for child in builder.children(recursive=True):
            try:
                if "pip" in child.cmdline():
                    found.append(child)
            except psutil.Error:  # gone, or a zombie not yet reaped
                continue
        return found

    installing = wait_until(pip, 120, "pip installing the dependencies")
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert err.splitlines()[-1:] == [f"build: stopped by {signum.name}; nothing was written"]
    assert "Traceback" not in err
    assert not psutil.wait_procs(installing, timeout=30)[1]  # pip is gone too
    assert list(tmp_path.iterdir()) == [temp] and list(temp.iterdir()) == []


def test_an_output_folder_it_cannot_write_is_named_as_given(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    result = build_tool("blender", release, "--out", "/proc/blender.zip")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("build-tool: ERROR: /proc/blender.zip: cannot write there (")
    assert ".build-tool-" not in result.stderr and "Traceback" not in result.stderr


def test_the_static_build_hint_is_for_ffmpeg_only(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", {f"{TOP}/README": b"no blender here\n"})
    result = build_tool("blender", release, "--out", tmp_path / "b.zip")
    assert result.returncode == 3
    assert "no blender executable at its top; pass the blender release\n" in result.stderr
    assert "static build" not in result.stderr


def test_build_tool_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    result = subprocess.run(
        # -S: no site-packages at all, whatever the machine has installed.
        [python, "-S", str(BUILD_TOOL), "blender", str(release), "--out", str(tmp_path / "b.zip")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"built {tmp_path / 'b.zip'}: 21 files" in result.stdout
