"""The steps of a bootstrap plan, and carrying them out.

An ``Action`` is one change (or a ``keep``) with the reason for it; ``carry_out``
carries the changes out in order, each atomic, stopping at the first failure with a
``RuntimeFailure`` that names the path and the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from node_agent.common import fsutil
from node_agent.common.errors import RuntimeFailure


class ActionKind(Enum):
    """What an action does."""

    CREATE_DIR = "create dir"
    MAKE_EXECUTABLE = "chmod +x"
    LINK = "link"
    WRITE_FILE = "write"
    LINK_LIBRARIES = "link libs"
    REMOVE_DIR = "remove"
    KEEP = "keep"


@dataclass(frozen=True)
class Action:
    """One step of the plan, with the reason for it."""

    kind: ActionKind
    path: str
    reason: str
    target: Optional[str] = None  # LINK: where the link points
    content: Optional[bytes] = field(default=None, repr=False)  # WRITE_FILE
    mode: int = 0  # CREATE_DIR, WRITE_FILE, MAKE_EXECUTABLE: the mode to set
    links: tuple[tuple[str, str], ...] = ()  # LINK_LIBRARIES: (name, target) in the new dir

    def describe(self) -> str:
        """One line for the operator (never the file's content)."""
        what = f"{self.path} -> {self.target}" if self.target else self.path
        return f"{self.kind.value:<10} {what} ({self.reason})"


def _failure(action: Action, exc: OSError) -> RuntimeFailure:
    hint = {
        errno.ENOSPC: "the disk is full; free space on the node's disk (the previous "
        "file, if any, is intact)",
        errno.EDQUOT: "the disk quota is exhausted (the previous file, if any, is intact)",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: f"permission denied for uid {os.getuid()}",
        errno.EPERM: f"not permitted for uid {os.getuid()}",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return RuntimeFailure(f"{action.kind.value} {action.path} failed: {hint}")


def carry_out(changes: Sequence[Action]) -> list[Action]:
    """Carry out the changes in order; return them. Stops at the first failure
    with ``RuntimeFailure`` naming the path and the cause."""
    done = []
    for action in changes:
        try:
            if action.kind is ActionKind.CREATE_DIR:
                os.makedirs(action.path, exist_ok=True)
                os.chmod(action.path, action.mode)
            elif action.kind is ActionKind.MAKE_EXECUTABLE:
                os.chmod(action.path, action.mode)
            elif action.kind is ActionKind.LINK:
                assert action.target is not None
                fsutil.atomic_symlink(action.target, action.path)
            elif action.kind is ActionKind.WRITE_FILE:
                assert action.content is not None
                fsutil.atomic_write(action.path, action.content, action.mode)
            elif action.kind is ActionKind.LINK_LIBRARIES:
                fsutil.atomic_link_dir(action.path, action.links)
            elif action.kind is ActionKind.REMOVE_DIR:
                shutil.rmtree(action.path)  # unlinks the links in it, never follows them
        except OSError as exc:
            raise _failure(action, exc) from None
        done.append(action)
    return done
