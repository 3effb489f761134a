"""The capped output files in-process: bounded on disk, nothing lost, the newest
output kept in the file, backups rotated, refused where a cut would not be safe."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.common import logfiles
from node_agent.common.logfiles import CappedOutput

CAP = 64 * 1024
LINE = 100  # bytes per numbered line


def _line(number: int) -> bytes:
    return b"%08d " % number + b"x" * (LINE - 10) + b"\n"


def _stream(first: int, count: int) -> bytes:
    return b"".join(_line(n) for n in range(first, first + count))


def _kept(path: Path, backups: int) -> bytes:
    """Everything kept, oldest first: the backups, then the file itself."""
    older = [Path(f"{path}.{n}.gz") for n in range(backups, 0, -1)]
    return b"".join(gzip.decompress(p.read_bytes()) for p in older if p.exists()) + (
        path.read_bytes()
    )


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "stdout.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    yield path, fd
    os.close(fd)


def _write_all(output: CappedOutput, data: bytes, chunk: int = 4096) -> None:
    for start in range(0, len(data), chunk):
        view = memoryview(data[start : start + chunk])
        while view:
            view = view[output.write(view) :]
        output.written()


def test_far_past_the_cap_the_disk_use_stays_bounded_and_the_newest_is_whole(
    opened: tuple[Path, int],
) -> None:
    path, fd = opened
    output = CappedOutput(fd, str(path), CAP, backups=3)
    lines = 40 * CAP // LINE  # 40 caps' worth
    _write_all(output, _stream(0, lines))
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["stdout.txt", "stdout.txt.1.gz", "stdout.txt.2.gz", "stdout.txt.3.gz"]
    assert path.stat().st_size <= CAP + 4096
    assert sum(p.stat().st_size for p in path.parent.iterdir()) <= 4 * (CAP + 4096)
    kept = _kept(path, 3)
    # A gapless suffix of what was written, in whole lines, at least 3 caps less the
    # newest part each cut leaves in the file.
    assert _stream(0, lines).endswith(kept)
    assert len(kept) >= 3 * (CAP - output.keep) and len(kept) % LINE == 0
    # The file starts at a line and holds the newest output.
    assert path.read_bytes().startswith(b"%08d " % (lines - path.stat().st_size // LINE))
    assert path.read_bytes().endswith(_line(lines - 1))


def test_a_file_opened_without_append_goes_on_after_the_kept_part(tmp_path: Path) -> None:
    path = tmp_path / "stderr.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)  # no O_APPEND: a shared offset
    try:
        output = CappedOutput(fd, str(path), CAP, backups=2)
        _write_all(output, _stream(0, 3 * CAP // LINE))
        data = path.read_bytes()
        assert b"\0" not in data  # no hole where the offset ran past the cut
        assert _stream(0, 3 * CAP // LINE).endswith(_kept(path, 2))
    finally:
        os.close(fd)


def test_what_was_there_before_counts_and_is_kept(opened: tuple[Path, int]) -> None:
    path, fd = opened
    os.write(fd, _stream(0, 2 * CAP // LINE))  # an earlier run's output, past the cap
    output = CappedOutput(fd, str(path), CAP, backups=1)
    _write_all(output, _line(2 * CAP // LINE))
    assert gzip.decompress(Path(f"{path}.1.gz").read_bytes()) + path.read_bytes() == (
        _stream(0, 2 * CAP // LINE + 1)
    )
    assert path.stat().st_size <= output.keep


def test_a_line_longer_than_the_kept_part_is_cut_without_a_byte_lost(
    opened: tuple[Path, int],
) -> None:
    path, fd = opened
    output = CappedOutput(fd, str(path), CAP, backups=2)
    data = b"L" * (CAP + CAP // 2) + b"\nshort\n"
    _write_all(output, data)
    assert _kept(path, 2) == data


def test_the_cut_waits_while_a_child_holds_the_file(opened: tuple[Path, int]) -> None:
    path, fd = opened
    output = CappedOutput(fd, str(path), CAP, backups=2)
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=read_end,
        stdout=fd,  # holds the file, as the start-up report does
    )
    os.close(read_end)
    try:
        _write_all(output, _stream(0, 2 * CAP // LINE))
        assert not Path(f"{path}.1.gz").exists()  # its writes are not under our lock
        assert path.stat().st_size == len(_stream(0, 2 * CAP // LINE))
    finally:
        os.close(write_end)
        child.wait(30)
    output._retry_at = 0.0  # the next write would come a second later on a real node
    _write_all(output, _line(2 * CAP // LINE))
    assert Path(f"{path}.1.gz").exists()
    assert _kept(path, 2) == _stream(0, 2 * CAP // LINE + 1)


def test_only_regular_files_that_can_be_read_back_are_capped(tmp_path: Path) -> None:
    script = (
        "import sys; from node_agent.common import logfiles; "
        "print('\\n'.join(logfiles.configure(64 * 1024, 2)), file=sys.stderr)"
    )
    path = tmp_path / "out.txt"
    with open(path, "wb") as out:
        result = subprocess.run(
            [sys.executable, "-c", script],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
    said = result.stderr
    assert f"stdout: {path} capped at 64 KiB, 2 compressed backup(s)" in said
    assert "(opened for writing)" in said
    assert "stderr" not in said  # a pipe: whoever reads it keeps it bounded
    with open(path, "ab") as out:
        path.unlink()  # a file that is gone cannot be found by name, nor backed up beside
        result = subprocess.run(
            [sys.executable, "-c", script],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert "stdout: not capped: its path cannot be found" in result.stderr


def test_a_file_that_cannot_be_read_back_is_not_capped(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_bytes(b"")
    path.chmod(0o200)  # write-only: nothing to compress it from
    if os.access(path, os.R_OK):
        pytest.skip("running as root: every file can be read back")
    script = (
        "import sys; from node_agent.common import logfiles; "
        "print('\\n'.join(logfiles.configure(64 * 1024, 2)), file=sys.stderr)"
    )
    with open(path, "ab") as out:
        result = subprocess.run(
            [sys.executable, "-c", script],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert f"stdout: not capped: {path} cannot be read back" in result.stderr


def test_no_cap_at_all_when_switched_off() -> None:
    assert logfiles.configure(None, 5) == ["stdout and stderr: not capped (log_max_size is off)"]
    assert type(logfiles.output(1)) is logfiles.Output


def test_two_writers_at_once_one_cut_at_a_time_nothing_lost(opened: tuple[Path, int]) -> None:
    path, fd = opened
    output = CappedOutput(fd, str(path), CAP, backups=100)  # keep it all, to count it
    lines = 20 * CAP // LINE

    def write(mark: bytes) -> None:
        for number in range(lines):
            _write_all(output, mark + _line(number)[1:])

    writers = [threading.Thread(target=write, args=(mark,)) for mark in (b"A", b"B")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    kept = _kept(path, 100).splitlines(keepends=True)
    for mark in (b"A", b"B"):
        own = [line for line in kept if line.startswith(mark)]
        assert own == [mark + _line(n)[1:] for n in range(lines)]
    assert len(kept) == 2 * lines
