"""supervisord, the baseline of ``bench.rest``: installed from the package registry
into a throwaway virtual environment by the bench itself (never a dependency of
node-agent), and run in the foreground with one program."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path
from typing import Optional

VERSION = "4.3.0"


def install(where: Path) -> tuple[Optional[Path], str]:
    """``supervisord`` in a new virtual environment under ``where``; (None, why)
    when it cannot be had (no registry)."""
    venv.create(where, with_pip=True)
    pip = subprocess.run(
        [
            str(where / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"supervisor=={VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0:
        return None, (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
    return where / "bin" / "supervisord", f"supervisord {VERSION}"


def config(work: Path, program: Path, environment: dict[str, str], stop_wait: float) -> Path:
    """A configuration running ``program`` (restarted whenever it exits, counted as
    started at once) with ``environment``; SIGTERM, then SIGKILL after
    ``stop_wait`` seconds, when supervisord is told to stop."""
    env = ",".join(f'{k}="{v}"' for k, v in environment.items())
    path = work / "supervisord.conf"
    path.write_text(
        f"""[supervisord]
nodaemon=true
logfile={work}/supervisord.log
pidfile={work}/supervisord.pid
childlogdir={work}
loglevel=warn

[program:worker]
command={program}
autostart=true
autorestart=true
startsecs=0
startretries=1000000
stopwaitsecs={stop_wait:g}
stdout_logfile={work}/worker.out
stderr_logfile={work}/worker.err
environment={env}
"""
    )
    return path


def start(supervisord: Path, conf: Path) -> subprocess.Popen[bytes]:
    """Run supervisord in the foreground."""
    return subprocess.Popen(
        [str(supervisord), "-n", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
