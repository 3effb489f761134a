"""The zip writer and its packer: files deflated in a thread while the caller
reads, laid out as a zip that zipfile and unzip read back: sorted, fixed times,
Unix modes, UTF-8 names flagged, zip64 records where a plain zip cannot count.
(A packer that cannot write: tests/builders/test_untrusted.py, a full disk.)"""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from packer import Packer
from zipwriter import Member, Packed, UnwritableNames, write_zip


def _packed(folder: Path, files: dict[str, bytes]) -> dict[str, Packed]:
    with Packer(folder / "packed") as packer:
        numbers = {name: packer.keep(io.BytesIO(data)) for name, data in files.items()}
        records = packer.finish()
    return {name: records[number] for name, number in numbers.items()}


def test_the_zip_reads_back_as_written(tmp_path: Path) -> None:
    files = {
        "blender": b"#!/bin/sh\n" * 1000,
        "4.2/datafiles/empty": b"",
        "4.2/datafiles/café.txt": "crème brûlée\n".encode(),
        "lib/libcycles.so": bytes(range(256)) * 5000,  # 1.2 MiB: more than one chunk
    }
    packed = _packed(tmp_path, files)
    members = {name: Member(record, name == "blender") for name, record in packed.items()}
    write_zip(tmp_path / "out.zip", members)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert archive.testzip() is None  # every CRC checks
        infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(files)
        for info in infos:
            assert archive.read(info) == files[info.filename]
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED
            mode = 0o755 if info.filename == "blender" else 0o644
            assert info.external_attr >> 16 == stat.S_IFREG | mode
            assert bool(info.flag_bits & 0x800) == (not info.filename.isascii())
    if shutil.which("unzip"):
        tested = subprocess.run(
            ["unzip", "-tq", str(tmp_path / "out.zip")], capture_output=True, check=False
        )
        assert tested.returncode == 0, tested.stdout
    # The same members, the same bytes.
    write_zip(tmp_path / "again.zip", members)
    assert (tmp_path / "again.zip").read_bytes() == (tmp_path / "out.zip").read_bytes()


def test_more_entries_than_a_plain_zip_counts_take_zip64_records(tmp_path: Path) -> None:
    files = {f"f{i:05d}": str(i).encode() for i in range(66_000)}
    packed = _packed(tmp_path, files)
    write_zip(tmp_path / "many.zip", {name: Member(r, False) for name, r in packed.items()})
    with zipfile.ZipFile(tmp_path / "many.zip") as archive:
        assert len(archive.infolist()) == 66_000
        assert archive.read("f65999") == b"65999"


def test_a_file_past_4_gib_takes_zip64_fields(tmp_path: Path) -> None:
    # The record says what deflating 5 GiB gave; only the directory is read back.
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x03\x00")
    big = Packed(blob, 0, 2, 0x12345678, 5 << 30)
    write_zip(tmp_path / "big.zip", {"big.img": Member(big, False)})
    with zipfile.ZipFile(tmp_path / "big.zip") as archive:
        (info,) = archive.infolist()
    assert (info.file_size, info.compress_size, info.CRC) == (5 << 30, 2, 0x12345678)
    assert info.header_offset == 0


def test_names_that_are_not_utf8_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    packed = _packed(tmp_path, {"x": b"x"})["x"]
    with pytest.raises(UnwritableNames, match=r"b'\\xffname'"):
        write_zip(tmp_path / "out.zip", {"\udcffname": Member(packed, False)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed"]
