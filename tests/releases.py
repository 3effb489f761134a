"""Release archives and .deb files made in the tests, as their projects publish
them: tar (any compression), zip (Unix symlinks as Info-ZIP stores them), folders,
and Debian packages (an ar archive around data.tar.*)."""

from __future__ import annotations

import io
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Union

# name -> bytes (a file, mode 0644), (bytes, mode), "->target" (a symlink), or None
# (a folder).
Spec = Union[bytes, tuple[bytes, int], str, None]

ELF_LIBRARY = b"\x7fELF" + b"\0" * 60  # enough of an ELF header for the builder's check
BUILD_TOOL = Path(__file__).resolve().parent.parent / "packaging" / "build-tool"


def elf_library(
    soname: Union[str, None], payload: bytes = b"", needed: tuple[str, ...] = ()
) -> bytes:
    """A small ELF64 shared object as the loader reads one: a header, a PT_LOAD
    and a PT_DYNAMIC segment whose entries name its soname (none when None) and
    the libraries it needs; ``payload`` after it tells copies apart."""
    names = [*needed, *([soname] if soname else [])]
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    offsets = [1 + sum(len(n.encode()) + 1 for n in names[:i]) for i in range(len(names))]
    dynamic_at = 64 + 2 * 56
    entries = [(1, offset) for offset in offsets[: len(needed)]]  # DT_NEEDED
    if soname:
        entries.append((14, offsets[-1]))  # DT_SONAME
    strtab_at = dynamic_at + (len(entries) + 3) * 16
    entries += [(5, strtab_at), (10, len(strtab)), (0, 0)]  # DT_STRTAB, DT_STRSZ, DT_NULL
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    size = strtab_at + len(strtab) + len(payload)
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 4, 0, 0, 0, size, size, 0x1000)
    dyn = struct.pack(
        "<IIQQQQQQ", 2, 6, dynamic_at, dynamic_at, dynamic_at, len(dynamic), len(dynamic), 8
    )
    return header + load + dyn + dynamic + strtab + payload


def build_tool(*args: object, file_size_limit: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``packaging/build-tool`` as an operator does; with ``file_size_limit``,
    no file it writes may grow past that many bytes (writing more fails with
    ``EFBIG``, as a full disk fails with ``ENOSPC``), so that a test of an archive
    that would fill the disk cannot."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, str(BUILD_TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limited if file_size_limit else None,
    )


def _file(spec: Spec) -> tuple[bytes, int]:
    if isinstance(spec, tuple):
        return spec
    assert isinstance(spec, bytes)
    return spec, 0o644


def tar_bytes(members: Mapping[str, Spec], mode: str = "w:xz") -> bytes:
    """A tar archive of ``members``, in their order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, spec in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if spec is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif isinstance(spec, str):
                info.type, info.linkname = tarfile.SYMTYPE, spec[2:]
                archive.addfile(info)
            else:
                data, info.mode = _file(spec)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_tar(path: Path, members: Mapping[str, Spec]) -> Path:
    """A tar archive at ``path``, compressed as its name says (.tar.xz, .tar.gz)."""
    compression = {".xz": "xz", ".gz": "gz", ".bz2": "bz2"}.get(path.suffix, "")
    path.write_bytes(tar_bytes(members, f"w:{compression}" if compression else "w"))
    return path


def write_zip(path: Path, members: Mapping[str, Spec]) -> Path:
    """A zip at ``path``: modes and symlinks stored the Unix way."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, spec in members.items():
            if spec is None:
                archive.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), b"")
                continue
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            if isinstance(spec, str):
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, spec[2:])
            else:
                data, mode = _file(spec)
                info.external_attr = (stat.S_IFREG | mode) << 16
                archive.writestr(info, data)
    return path


def write_folder(path: Path, members: Mapping[str, Spec]) -> Path:
    """The same members as a folder on disk."""
    for name, spec in members.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if spec is None:
            target.mkdir(exist_ok=True)
        elif isinstance(spec, str):
            os.symlink(spec[2:], target)
        else:
            data, mode = _file(spec)
            target.write_bytes(data)
            target.chmod(mode)
    return path


def write_deb(path: Path, data: Mapping[str, Spec], data_name: str = "data.tar.xz") -> Path:
    """A Debian package: ``debian-binary``, ``control.tar.xz`` and the data tar,
    in an ar archive (compressed as ``data_name`` says; ``.zst`` needs zstd)."""
    compression = {".xz": "w:xz", ".gz": "w:gz", ".tar": "w", ".zst": "w"}[Path(data_name).suffix]
    payload = tar_bytes(data, compression)
    if data_name.endswith(".zst"):
        payload = subprocess.run(
            ["zstd", "-q", "-c"], input=payload, capture_output=True, check=True
        ).stdout
    control = tar_bytes({"./control": b"Package: test\n"})
    with path.open("wb") as out:
        out.write(b"!<arch>\n")
        for name, body in (
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", control),
            (data_name, payload),
        ):
            out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode())
            out.write(body + (b"\n" if len(body) % 2 else b""))
    return path


def patch_zip(
    path: Path, name: Union[str, bytes], *, raw_name: bytes = b"", flags: int = 0, method: int = -1
) -> Path:
    """Alter the entry ``name`` (its bytes, if not text) of a zip in place, in its
    local header and its central directory record alike: its name's bytes (``raw_name``, as long as
    ``name``), flag bits set (``flags``), its compression method. What zip tools
    write and ``zipfile`` does not: encryption, Deflate64, names in a legacy code
    page."""
    data = bytearray(path.read_bytes())
    encoded = name.encode("utf-8") if isinstance(name, str) else name
    # signature, then the offsets of the flags, the method, the name's length, the name
    for signature, flag_at, method_at, length_at, name_at in (
        (b"PK\x03\x04", 6, 8, 26, 30),
        (b"PK\x01\x02", 8, 10, 28, 46),
    ):
        at = data.find(signature)
        while at >= 0:
            length = int.from_bytes(data[at + length_at : at + length_at + 2], "little")
            if data[at + name_at : at + name_at + length] == encoded:
                old = int.from_bytes(data[at + flag_at : at + flag_at + 2], "little")
                data[at + flag_at : at + flag_at + 2] = (old | flags).to_bytes(2, "little")
                if method >= 0:
                    data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
                if raw_name:
                    assert len(raw_name) == length
                    data[at + name_at : at + name_at + length] = raw_name
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path
