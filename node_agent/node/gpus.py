"""The node's NVIDIA GPUs as the driver reports them (``nvidia-smi``), and the
Manager tags a worker gets for them (the ``gpu_tags`` setting).

A GPU pool's driver comes from NVIDIA's VM extension at pool creation
(docs/pool.md, "GPU pools"); a node without it has no ``nvidia-smi``, or one that
lists no GPU. Only a GPU the driver lists earns the tags, so a "Cycles GPU" job
never lands on a node that would render it on the CPU.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from node_agent.common.log import get_logger

log = get_logger("gpus")

SMI_TIMEOUT = 20.0  # seconds: nvidia-smi waits on a driver that is still loading
QUERY = ("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits")


@dataclass(frozen=True)
class Gpu:
    """One GPU the driver lists."""

    name: str
    memory_mib: Optional[int]


@dataclass(frozen=True)
class GpuReport:
    """What the driver says: its GPUs and version, or why it says nothing."""

    gpus: tuple[Gpu, ...]
    driver: Optional[str]
    problem: Optional[str]  # None when nvidia-smi answered
    smi: Optional[str] = None  # the nvidia-smi that was asked


def parse_query(output: str) -> tuple[tuple[Gpu, ...], Optional[str]]:
    """The GPUs and driver version in ``nvidia-smi --query-gpu`` CSV output."""
    gpus = []
    driver = None
    for line in output.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0]:
            continue
        memory = int(fields[2]) if fields[2].isdigit() else None
        gpus.append(Gpu(fields[0], memory))
        driver = driver or fields[1]
    return tuple(gpus), driver


def nvidia_gpus(path: str) -> GpuReport:
    """Ask ``nvidia-smi`` (found on ``path``) for the GPUs and the driver version."""
    smi = shutil.which("nvidia-smi", path=path)
    if smi is None:
        return GpuReport((), None, "no nvidia-smi: no NVIDIA driver on this node")
    try:
        result = subprocess.run(
            [smi, *QUERY],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=SMI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return GpuReport((), None, f"{smi} did not answer within {SMI_TIMEOUT:.0f} s", smi)
    except OSError as exc:
        return GpuReport((), None, f"{smi}: {exc.strerror}", smi)
    gpus, driver = parse_query(result.stdout)
    if result.returncode != 0 or not gpus:
        said = (result.stderr or result.stdout).strip().splitlines()[:1]
        why = said[0][:200] if said else f"exit {result.returncode}, no GPU listed"
        return GpuReport((), driver, why, smi)
    return GpuReport(gpus, driver, None, smi)


def with_gpu_tags(
    worker_tags: Sequence[str], gpu_tags: Sequence[str], report: GpuReport
) -> tuple[str, ...]:
    """``worker_tags``, plus ``gpu_tags`` when the driver lists a GPU."""
    if not report.gpus:
        return tuple(worker_tags)
    return tuple(dict.fromkeys((*worker_tags, *gpu_tags)))


def effective_worker_tags(
    worker_tags: Sequence[str], gpu_tags: Sequence[str], path: str
) -> tuple[str, ...]:
    """The tags a new registration gets: ``worker_tags``, and ``gpu_tags`` (opt-in)
    when this node's driver lists a GPU; says which in the log."""
    if not gpu_tags:
        return tuple(worker_tags)
    report = nvidia_gpus(path)
    tags = with_gpu_tags(worker_tags, gpu_tags, report)
    if report.gpus:
        names = ", ".join(g.name for g in report.gpus)
        log.info("gpu_tags: %s (driver %s): adding %s", names, report.driver, ", ".join(gpu_tags))
    else:
        log.warning("gpu_tags: not added, no usable GPU: %s", report.problem)
    return tags
