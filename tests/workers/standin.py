"""A scriptable stand-in Flamenco Worker for the supervisor's tests.

``FAKE_WORKER`` is a comma-separated list of steps run in order:

  count              append "<pid>" to $FAKE_WORKER_DIR/runs (one line per start)
  mixed              write the mixed stream (see MIXED_*) to stdout and stderr
  lines:N[:B]        write N short Blender-like lines to stdout, B per write (1000)
  partial:TEXT       write TEXT to stdout without a newline
  run-tag            write "run N" (N: this start's number) without a newline
  out:TEXT / err:TEXT  write TEXT and a newline
  term:N             exit N on SIGTERM (default: die by the signal)
  term-stamp         on SIGTERM write the time to $DIR/exited, then exit 1
  term-after:NAME    on SIGTERM write the time to $DIR/terminated, then exit 1 once
                     $DIR/NAME exists (a worker slow to stop, as long as a test likes)
  ignore-term        ignore SIGTERM
  usr1-lines:TEXT    on every SIGUSR1 write "TEXT N" and a newline (N: 1, 2, ...)
  child-ignoring-term  start a child that ignores SIGTERM and sleeps; pid to $DIR/child
  daemon             double-fork a setsid daemon that ignores SIGTERM; pid to $DIR/daemon
  children:N         fork N children that sleep until a signal ends them
  late-print         start a child that, told to stop (after this worker exited),
                     prints "late line" on its way out
  orphans            from now on, make orphans that exit at once (the agent, their
                     subreaper, reaps one every few milliseconds) until a signal
  exit-first:K:N     exit N if this is one of the first K starts (needs count)
  later-runs-wait:K  from the (K+1)-th start on, skip the other steps and wait
  exit:N             exit N now
  wait               sleep until a signal ends the process
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

DIR = Path(os.environ.get("FAKE_WORKER_DIR", "."))
MIXED_STDOUT = (
    b"plain line\n"
    + b"invalid utf-8: \xff\xfe\xc3\x28 and a NUL \x00 byte\n"
    + b"".join(
        b"Fra:%d Mem:12.3M | Time:00:01.23 | Rendering %d/100 samples\n" % (i, i % 100)
        for i in range(100_000)
    )
    + b"L" * (10 * 1024 * 1024)  # a 10 MB line
    + b"\nlast line without newline"
)
BLENDER_LINE = b"Fra:1 Mem:12.3M (Peak 14.1M) | Time:00:01.23 | Rendering 1/100 samples\n"
MIXED_STDERR = b"err line 1\n\xff\xfe binary err\nerr tail without newline"


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _publish(name: str, text: str) -> None:
    """Write $DIR/name whole: a reader never sees it half-written."""
    temp = DIR / f".{name}.{os.getpid()}"
    temp.write_text(text)
    os.replace(temp, DIR / name)


def _sleeper(ignore_term: bool) -> None:
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        signal.pause()


def _fork_child(name: str, ignore_term: bool, daemon: bool) -> None:
    pid = os.fork()
    if pid:
        if daemon:
            os.waitpid(pid, 0)
        return
    if daemon:
        os.setsid()
        if os.fork():
            os._exit(0)
    _publish(name, str(os.getpid()))
    _sleeper(ignore_term)


def _line_on_signal(text: bytes) -> Callable[..., None]:
    told = itertools.count(1)
    return lambda *_: _write(1, b"%s %d\n" % (text, next(told)))


def _late_print() -> None:
    if os.fork():
        return

    def last_words(*_: object) -> None:
        _write(1, b"late line\n")
        os._exit(0)

    signal.signal(signal.SIGTERM, last_words)
    while True:
        signal.pause()


def main() -> None:
    steps = [s for s in os.environ.get("FAKE_WORKER", "wait").split(",") if s]
    runs = 0
    for step in steps:
        name, _, arg = step.partition(":")
        if name == "count":
            with open(DIR / "runs", "a") as handle:
                handle.write(f"{os.getpid()}\n")
            runs = len((DIR / "runs").read_text().splitlines())
        elif name == "mixed":
            _write(1, MIXED_STDOUT)
            _write(2, MIXED_STDERR)
        elif name == "lines":
            count, _, per_write = arg.partition(":")
            batch = int(per_write or 1000)
            block = BLENDER_LINE * batch
            for _ in range(int(count) // batch):
                _write(1, block)
        elif name == "run-tag":
            _write(1, b"run %d" % runs)
        elif name == "partial":
            _write(1, arg.encode())
        elif name in ("out", "err"):
            _write(1 if name == "out" else 2, arg.encode() + b"\n")
        elif name == "term-stamp":

            def stamped_exit(*_: object) -> None:
                _publish("exited", repr(time.time()))
                os._exit(1)

            signal.signal(signal.SIGTERM, stamped_exit)
        elif name == "term-after":

            def exit_when_told(*_: object, release: Path = DIR / arg) -> None:
                _publish("terminated", repr(time.time()))
                while not release.exists():
                    time.sleep(0.01)
                os._exit(1)

            signal.signal(signal.SIGTERM, exit_when_told)
        elif name == "term":
            signal.signal(signal.SIGTERM, lambda *_, code=int(arg): os._exit(code))
        elif name == "usr1-lines":
            signal.signal(signal.SIGUSR1, _line_on_signal(arg.encode()))
        elif name == "ignore-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif name == "child-ignoring-term":
            _fork_child("child", ignore_term=True, daemon=False)
        elif name == "children":
            for _ in range(int(arg)):
                if os.fork() == 0:
                    _sleeper(ignore_term=False)
        elif name == "daemon":
            _fork_child("daemon", ignore_term=True, daemon=True)
        elif name == "late-print":
            _late_print()
        elif name == "orphans":
            while True:
                if os.fork() == 0:
                    if os.fork() == 0:
                        os._exit(0)
                    os._exit(0)
                os.wait()
                time.sleep(0.005)
        elif name == "later-runs-wait":
            if runs > int(arg):
                while True:
                    signal.pause()
        elif name == "exit-first":
            count, code = arg.split(":")
            if runs <= int(count):
                sys.exit(int(code))
        elif name == "exit":
            sys.exit(int(arg))
        elif name == "wait":
            while True:
                signal.pause()
        else:
            sys.exit(f"standin: unknown step {step!r}")


if __name__ == "__main__":
    main()
