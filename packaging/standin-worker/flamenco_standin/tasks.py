"""What the stand-in worker runs: blender and ffmpeg as it finds them (ffmpeg:
tools/ffmpeg-linux-<arch>, tools/ffmpeg-linux, tools/ffmpeg beside the worker, then
PATH; a bundled file that is not executable is an error, with no fallback), and a
task's commands, stopped early by a shutdown or a "no" from may-i-run."""

import json
import os
import platform
import shutil
import subprocess
import threading
import time

from flamenco_standin.config import MAY_I_RUN
from flamenco_standin.output import log

ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def find_blender():
    exe = shutil.which("blender")
    if exe is None:
        log("WRN", "Blender could not be found. Flamenco Manager will have to supply the path")
        return
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr or "?").splitlines()[0]
    log("INF", "Blender found on this system", path=exe, version=first)


def find_ffmpeg(here):
    """(path, None) for the ffmpeg tasks will use, or (None, why not); ``here`` is
    the worker's own folder."""
    arch = ARCH.get(platform.machine().lower(), platform.machine())
    for name in (f"ffmpeg-linux-{arch}", "ffmpeg-linux", "ffmpeg"):
        bundled = os.path.join(here, "tools", name)
        if os.path.exists(bundled):
            if not os.access(bundled, os.X_OK):
                return None, f"{bundled}: permission denied"
            return check_ffmpeg(bundled)
    found = shutil.which("ffmpeg")
    return check_ffmpeg(found) if found else (None, "not found")


def check_ffmpeg(path):
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, check=False)
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"
    if not out.stdout.startswith("ffmpeg version "):
        return None, f"{path}: not ffmpeg (-version says {out.stdout[:40]!r})"
    return path, out.stdout.splitlines()[0]


class Runner:
    """Runs one task's commands; stops early when told to stop or when may-i-run
    says no."""

    def __init__(self, manager, ffmpeg, stopping):
        self.manager, self.ffmpeg, self.stopping = manager, ffmpeg, stopping

    def run(self, task):
        """The task's updates are the v3 worker's (``internal/worker/listener.go``):
        started, a step after each command that counts no steps of its own
        (``total_step_count`` 0; ``task_executor.go``), failed or completed. The
        stand-in's commands render no frames, so a command that counts its own steps
        reports none."""
        self.task, self.next_check, self.aborted = task, time.monotonic() + MAY_I_RUN, None
        url = f"/worker/task/{task['uuid']}"
        self.manager.call("POST", url, {"activity": "Started", "taskStatus": "active"})
        steps = 0
        for command in task.get("commands") or []:
            error = self.command(command.get("name"), command.get("parameters") or {})
            if self.aborted or self.stopping.is_set():
                log("WRN", "task aborted", task=task["uuid"], reason=self.aborted or "shutdown")
                return
            if error:
                log("WRN", "error executing task", task=task["uuid"], error=error)
                failed = f"Failed: {error}"
                update = {"activity": failed, "log": failed, "taskStatus": "failed"}
                self.manager.call("POST", url, update)
                return
            if not command.get("total_step_count"):
                steps += 1
                self.manager.call("POST", url, {"activity": "Progress", "steps_completed": steps})
        self.manager.call("POST", url, {"activity": "Completed", "taskStatus": "completed"})
        log("INF", "task completed", task=task["uuid"], name=task["name"])

    def command(self, name, parameters):
        if name == "sleep":
            self.wait(time.monotonic() + float(parameters.get("duration_in_seconds", 1)))
        elif name == "echo":
            # As the v3 worker's echo (command_misc.go): logged, and sent to the task log.
            message = str(parameters.get("message", ""))
            log("INF", "echo", message=message)
            update = {"log": f"echo: {json.dumps(message)}"}  # Go's %q, for plain text
            self.manager.call("POST", f"/worker/task/{self.task['uuid']}", update)
        elif name == "blender-render":
            return self.execute([parameters.get("exe") or "blender", "--version"])
        elif name in ("frames-to-video", "exec-ffmpeg"):
            if self.ffmpeg[0] is None:
                return f"ffmpeg: {self.ffmpeg[1]}"
            return self.execute([self.ffmpeg[0], "-version"])
        else:
            return f"unknown command {name!r}"
        return None

    def execute(self, argv):
        try:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            return f"{argv[0]}: {exc.strerror}"
        reader = threading.Thread(target=self.forward, args=(process,), daemon=True)
        reader.start()
        self.wait(None, process)
        if process.poll() is None:
            process.kill()
        reader.join(5)
        return None if process.wait() == 0 else f"{argv[0]} exited {process.returncode}"

    def forward(self, process):
        for line in process.stdout:
            log("DBG", line.decode(errors="replace").rstrip("\n"), pid=process.pid)

    def wait(self, deadline, process=None):
        while not self.stopping.is_set() and not self.aborted:
            if process is not None and process.poll() is not None:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if now >= self.next_check:
                self.next_check = now + MAY_I_RUN
                status, answer = self.manager.call(
                    "GET", f"/worker/task/{self.task['uuid']}/may-i-run"
                )
                if status == 200 and not answer.get("mayKeepRunning"):
                    self.aborted = answer.get("reason") or "manager said NO"
                    return
            self.stopping.wait(min(0.1, max(0.0, (deadline or now + 1) - now)))
