"""What an ELF file says about itself, as the dynamic loader reads it: whether it is
a shared object, its soname (``DT_SONAME``, the name the loader looks for) and the
libraries it needs (``DT_NEEDED``).

Read from the program headers, as the loader does (section headers may be stripped):
the ``PT_DYNAMIC`` segment's entries, their strings in the ``DT_STRTAB`` table found
through the ``PT_LOAD`` segment that maps it. Files come from downloads, so every
offset and count is checked against the file before it is used: a damaged or hostile
file is "not a shared object", never an exception or a long loop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

MAGIC = b"\x7fELF"
ET_DYN = 3
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14
MAX_HEADERS = 1024  # program headers; real libraries have about ten
MAX_DYNAMIC = 4096  # dynamic entries; real libraries have a few dozen
MAX_NAME = 4096  # bytes of one soname or needed name


@dataclass(frozen=True)
class SharedObject:
    """An ELF shared object's names."""

    soname: Optional[str]
    needed: tuple[str, ...]


class _Bad(Exception):
    """The file is not what its header says."""


@dataclass(frozen=True)
class _Layout:
    """How to read this file's words: its byte order and size."""

    order: str  # "<" little, ">" big endian
    wide: bool  # ELF64

    def read(self, data: IO[bytes], offset: int, form: str) -> tuple[int, ...]:
        fmt = self.order + form
        data.seek(offset)
        raw = data.read(struct.calcsize(fmt))
        if len(raw) != struct.calcsize(fmt):
            raise _Bad
        return struct.unpack(fmt, raw)


def _segments(layout: _Layout, data: IO[bytes]) -> list[tuple[int, int, int, int]]:
    """(type, file offset, virtual address, size in the file) of each program header."""
    if layout.wide:
        phoff, phentsize, phnum = (layout.read(data, 32, "Q")[0], *layout.read(data, 54, "HH"))
        form, picks = "IIQQQQQQ", (0, 2, 3, 5)
    else:
        phoff, phentsize, phnum = (layout.read(data, 28, "I")[0], *layout.read(data, 42, "HH"))
        form, picks = "IIIIIIII", (0, 1, 2, 4)
    if phnum > MAX_HEADERS or phentsize < struct.calcsize(layout.order + form):
        raise _Bad
    found = []
    for index in range(phnum):
        fields = layout.read(data, phoff + index * phentsize, form)
        kind, offset, address, size = (fields[i] for i in picks)
        found.append((kind, offset, address, size))
    return found


def _file_offset(segments: list[tuple[int, int, int, int]], address: int) -> int:
    for kind, offset, start, size in segments:
        if kind == PT_LOAD and start <= address < start + size:
            return offset + address - start
    raise _Bad


def _string(data: IO[bytes], offset: int) -> str:
    data.seek(offset)
    raw = data.read(MAX_NAME)
    end = raw.find(b"\0")
    if end < 0:
        raise _Bad
    return raw[:end].decode("utf-8", "surrogateescape")


def read_shared_object(data: IO[bytes]) -> Optional[SharedObject]:
    """The names of the shared object in ``data``; None when it is not one (not
    ELF, an executable or object file, damaged)."""
    header = data.read(20)
    if len(header) < 20 or header[:4] != MAGIC or header[4] not in (1, 2):
        return None
    if header[5] not in (1, 2):
        return None
    layout = _Layout("<" if header[5] == 1 else ">", header[4] == 2)
    try:
        if layout.read(data, 16, "H")[0] != ET_DYN:
            return None
        segments = _segments(layout, data)
        dynamic = [s for s in segments if s[0] == PT_DYNAMIC]
        if not dynamic:
            return SharedObject(None, ())
        _, offset, _, size = dynamic[0]
        entry = "qQ" if layout.wide else "iI"
        width = struct.calcsize(layout.order + entry)
        tags: list[tuple[int, int]] = []
        for index in range(min(size // width, MAX_DYNAMIC)):
            tag, value = layout.read(data, offset + index * width, entry)
            if tag == DT_NULL:
                break
            tags.append((tag, value))
        table = [value for tag, value in tags if tag == DT_STRTAB]
        if not table:
            raise _Bad
        strings = _file_offset(segments, table[0])
        names: dict[int, list[str]] = {DT_NEEDED: [], DT_SONAME: []}
        for tag, value in tags:
            if tag in names:
                names[tag].append(_string(data, strings + value))
    except (_Bad, struct.error, OverflowError, ValueError):
        return None
    sonames = names[DT_SONAME]
    return SharedObject(sonames[0] if sonames else None, tuple(names[DT_NEEDED]))


def shared_object(path: Path) -> Optional[SharedObject]:
    """``read_shared_object`` of the file at ``path``."""
    with path.open("rb") as data:
        return read_shared_object(data)
