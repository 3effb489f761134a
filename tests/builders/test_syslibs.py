"""The system libraries a tool package bundles (``build-tool --libs``): shared
objects taken by what they are (ELF, in the library folders, named by their
soname), one copy each, whatever links a ``.deb`` adds; inputs that give none
refused; damaged ``.deb`` files refused naming the file; the ELF reader safe on any
bytes."""

from __future__ import annotations

import io
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
from elf import SharedObject, read_shared_object, shared_object
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.releases import (
    ELF_LIBRARY,
    Spec,
    build_tool,
    elf_library,
    write_deb,
    write_folder,
    write_tar,
)

TOP = "blender-4.2.3-linux-x64"
LIB = "./usr/lib/x86_64-linux-gnu"
XI = elf_library("libXi.so.6", b"Xi", ("libX11.so.6", "libc.so.6"))


def _release(tmp_path: Path) -> Path:
    return write_tar(
        tmp_path / f"{TOP}.tar.xz",
        {f"{TOP}/": None, f"{TOP}/blender": (b"#!/bin/sh\necho 'Blender 4.2.3'\n", 0o755)},
    )


def _libraries(package: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as archive:
        return {
            n.split("/", 1)[1]: archive.read(n)
            for n in archive.namelist()
            if n.startswith("_system_libs/")
        }


def _xi_deb(path: Path, data_name: str = "data.tar.xz") -> Path:
    members: dict[str, Spec] = {
        "./usr/": None,
        f"{LIB}/libXi.so.6.1.0": XI,
        f"{LIB}/libXi.so.6": "->libXi.so.6.1.0",
        f"{LIB}/libXalias.so.6": f"->/{LIB[2:]}/libXi.so.6.1.0",  # absolute, as debs may
        f"{LIB}/libXi.so": "->libXi.so.6.1.0.missing",  # a -dev link to nothing
        "./usr/share/doc/libxi6/copyright": b"MIT\n",
    }
    return write_deb(path, members, data_name)


def test_one_copy_per_library_under_its_soname(tmp_path: Path) -> None:
    folder = tmp_path / "debs"
    folder.mkdir()
    _xi_deb(folder / "libxi6_1.8.1-1_amd64.deb")
    loose = write_folder(
        tmp_path / "loose",
        {"libICE.so.6.3.0": elf_library("libICE.so.6", b"ICE"), "notes.txt": b"text\n"},
    )
    out = tmp_path / "b.zip"
    result = build_tool(
        "blender", _release(tmp_path), "--libs", folder, "--libs", loose, "--out", out
    )
    assert result.returncode == 0, result.stderr
    # The loader looks for the soname: one copy under it, none under the file's own
    # name or the .deb's other links.
    assert _libraries(out) == {"libICE.so.6": elf_library("libICE.so.6", b"ICE"), "libXi.so.6": XI}
    with zipfile.ZipFile(out) as archive:
        modes = {
            i.external_attr >> 16 & 0o777
            for i in archive.infolist()
            if "_system_libs" in i.filename
        }
    assert modes == {0o644}
    assert "bundled libraries: libICE.so.6 libXi.so.6" in result.stdout


def test_a_soname_that_is_not_all_digits(tmp_path: Path) -> None:
    tidy = elf_library("libtidy.so.5deb1", b"tidy")
    deb = write_deb(
        tmp_path / "libtidy5deb1_5.6.0-11build2_amd64.deb",
        {f"{LIB}/libtidy.so.5.6.0": tidy, f"{LIB}/libtidy.so.5deb1": "->libtidy.so.5.6.0"},
    )
    out = tmp_path / "b.zip"
    result = build_tool("blender", _release(tmp_path), "--libs", deb, "--out", out)
    assert result.returncode == 0, result.stderr
    assert _libraries(out) == {"libtidy.so.5deb1": tidy}


def test_needed_libraries_in_subfolders_come_along(tmp_path: Path) -> None:
    pulse = elf_library("libpulse.so.0", b"p", ("libpulsecommon-16.1.so",))
    common = elf_library("libpulsecommon-16.1.so", b"c")
    deb = write_deb(
        tmp_path / "libpulse0_16.1_amd64.deb",
        {
            f"{LIB}/libpulse.so.0.24.2": pulse,
            f"{LIB}/pulseaudio/libpulsecommon-16.1.so": common,
            f"{LIB}/pulseaudio/module-plugin.so": elf_library(None, b"plugin"),
            f"{LIB}/gio/modules/libgiognutls.so": elf_library(None, b"gio"),
        },
    )
    out = tmp_path / "b.zip"
    result = build_tool("blender", _release(tmp_path), "--libs", deb, "--out", out)
    assert result.returncode == 0, result.stderr
    assert _libraries(out) == {"libpulse.so.0": pulse, "libpulsecommon-16.1.so": common}


def test_an_input_without_a_library_is_refused(tmp_path: Path) -> None:
    dev = write_deb(
        tmp_path / "libtidy-dev_5.6.0_amd64.deb",
        {
            f"{LIB}/libtidy.so": "->libtidy.so.5deb1",
            "./usr/include/tidy.h": b"/* header */\n",
            "./usr/lib/x86_64-linux-gnu/libtidy.a": b"!<arch>\n",
        },
    )
    links = tmp_path / "links"
    links.mkdir()
    (links / "libX11.so.6").symlink_to("/usr/lib/x86_64-linux-gnu/libX11.so.6")
    fake = write_folder(tmp_path / "fake", {"libfake.so.1": b"not ELF\n"})
    result = build_tool(
        "blender", _release(tmp_path), "--libs", dev, "--libs", links, "--libs", fake
    )
    assert result.returncode == 3, result.stdout
    err = result.stderr
    assert f"--libs {dev}: installs no ELF shared library into /lib or /usr/lib" in err
    assert f"--libs {links}: no ELF shared library at its top" in err
    assert "its 1 symlink(s) are not followed: copy with cp -L" in err
    assert f"--libs {fake}: no ELF shared library" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("dist/*")) and not list(tmp_path.glob("*.zip"))


@pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd command to make a .zst deb")
def test_zstd_compressed_deb(tmp_path: Path) -> None:
    deb = _xi_deb(tmp_path / "libxi6_1.8.1-1_amd64.deb", "data.tar.zst")
    out = tmp_path / "b.zip"
    result = build_tool("blender", _release(tmp_path), "--libs", deb, "--out", out)
    assert result.returncode == 0, result.stderr
    assert _libraries(out) == {"libXi.so.6": XI}


def test_conflicting_libraries_are_refused(tmp_path: Path) -> None:
    one = write_folder(tmp_path / "one", {"libXi.so.6": elf_library("libXi.so.6", b"1")})
    two = write_folder(tmp_path / "two", {"libXi.so.6.1": elf_library("libXi.so.6", b"2")})
    result = build_tool("blender", _release(tmp_path), "--libs", one, "--libs", two)
    assert result.returncode == 3
    assert "two different libraries named libXi.so.6" in result.stderr


@pytest.mark.parametrize("size", [b"-200", b"-1", b"+60", b"1e3", b"          "])
def test_a_damaged_ar_header_is_refused_naming_the_deb(tmp_path: Path, size: bytes) -> None:
    deb = _xi_deb(tmp_path / "libxi6_1.8.1-1_amd64.deb")
    data = bytearray(deb.read_bytes())
    header = 8  # the first member's header follows the magic line
    data[header + 48 : header + 58] = size.ljust(10)
    deb.write_bytes(bytes(data))
    result = build_tool("blender", _release(tmp_path), "--libs", deb)
    assert result.returncode == 3, result.stderr
    assert f"build-tool: ERROR: {deb}: a damaged .deb (a bad ar header)" in result.stderr


def test_the_elf_reader_reads_real_libraries() -> None:
    folders = ("/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib")
    libc = next((Path(f, "libc.so.6") for f in folders if Path(f, "libc.so.6").is_file()), None)
    if libc is None:
        pytest.skip("no libc.so.6 found on this machine")
    found = shared_object(libc)
    assert found is not None and found.soname == "libc.so.6"
    assert read_shared_object(io.BytesIO(ELF_LIBRARY)) is None  # not ET_DYN
    assert read_shared_object(io.BytesIO(b"#!/bin/sh\n")) is None


def test_the_elf_reader_refuses_hostile_headers() -> None:
    good = elf_library("libXi.so.6", b"", ("libX11.so.6",))
    assert read_shared_object(io.BytesIO(good)) == SharedObject("libXi.so.6", ("libX11.so.6",))
    many_headers = bytearray(good)
    many_headers[56:58] = struct.pack("<H", 65535)  # e_phnum
    assert read_shared_object(io.BytesIO(bytes(many_headers))) is None
    assert read_shared_object(io.BytesIO(good[:100])) is None  # cut in the headers
    assert read_shared_object(io.BytesIO(good[: len(good) - 5])) is None  # cut in a name


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=300))
def test_the_elf_reader_never_raises(noise: bytes, at: int) -> None:
    """Any bytes over a valid library: a shared object or None, never an exception."""
    good = bytearray(elf_library("libXi.so.6", b"payload", ("libX11.so.6",)))
    good[at : at + len(noise)] = noise
    found = read_shared_object(io.BytesIO(bytes(good)))
    assert found is None or isinstance(found, SharedObject)
