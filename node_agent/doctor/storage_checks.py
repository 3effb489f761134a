"""Checks of the shared storage the worker needs: mounted or not, its file system
type, writable by this user, free space."""

from __future__ import annotations

from node_agent.doctor.context import NEEDS_ENV, Context
from node_agent.doctor.report import Row, Status
from node_agent.runtime.storage import probe_all, storage_mounts

LOW_SPACE = 2**30  # bytes: less than this free on the shared storage is a warning

_NOT_MOUNTED_FIX = (
    "check the pool's mountConfiguration (its relativeMountPath must match "
    "storage_mounts) and the node's mount errors in Batch Explorer; the storage "
    "must be reachable from the pool's subnet"
)
_NOT_WRITABLE_FIX = (
    "let the start task's user write: Azure Files SMB needs mountOptions "
    "'-o vers=3.0,dir_mode=0777,file_mode=0777'; an NFS export must be read-write "
    "and its directory writable by that user"
)


def check_storage(ctx: Context) -> list[Row]:
    """One row per mount in ``storage_mounts``."""
    if ctx.env is None:
        return [Row("storage", Status.SKIPPED, NEEDS_ENV)]
    if ctx.settings is None:
        return [Row("storage", Status.SKIPPED, "skipped: the settings do not parse")]
    mounts = storage_mounts(ctx.env, ctx.settings.storage_mounts)
    if not mounts:
        return [
            Row(
                "storage",
                Status.SKIPPED,
                "no shared storage configured (storage_mounts is empty)",
            )
        ]
    rows = []
    for status in probe_all(mounts):
        name = f"storage {status.mount.name}"
        if not status.mounted:
            rows.append(Row(name, Status.FAILED, status.describe(), _NOT_MOUNTED_FIX))
        elif not status.writable:
            rows.append(Row(name, Status.FAILED, status.describe(), _NOT_WRITABLE_FIX))
        elif status.free_bytes is not None and status.free_bytes < LOW_SPACE:
            rows.append(
                Row(
                    name,
                    Status.WARNING,
                    status.describe(),
                    "free space on the share (old renders) or grow its quota",
                )
            )
        else:
            rows.append(Row(name, Status.OK, status.describe()))
    return rows
