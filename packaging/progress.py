"""What a builder shows while it works: ``Progress``, and sizes as people read them.

On a terminal, a bar redrawn in place; otherwise (a log, CI) a line every few
seconds, so that a long step is never silent and a log does not fill with bars.
Standard library only: ``build-tool`` runs on a bare system ``python3`` (a
progress library such as tqdm would need a virtual environment).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, Optional, TextIO

LINE_EVERY = 5.0  # seconds between lines when not on a terminal
BAR_EVERY = 0.2  # seconds between redraws of the bar


def human(size: int) -> str:
    """``size`` bytes as people read it: ``812 bytes``, ``4.2 KiB``, ``1.1 GiB``."""
    if size < 1024:
        return f"{size} byte" + ("" if size == 1 else "s")
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class Progress:
    """The progress of a builder's steps on ``stream`` (stderr): ``step`` starts
    one, ``update`` tells how far it is (cheap enough to call for every chunk),
    ``done`` ends it."""

    def __init__(
        self,
        prog: str,
        stream: Optional[TextIO] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prog = prog
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.clock = clock
        self.what = ""
        self.total: Optional[int] = None
        self.started = self.shown = 0.0
        self.last = 0
        self.drawn = False

    def step(self, what: str, total: Optional[int]) -> None:
        """Start a step of ``total`` bytes (None: unknown)."""
        self.done()
        self.what, self.total, self.last = what, total, 0
        self.started = self.shown = self.clock()

    def update(self, done: int, total: Optional[int] = None) -> None:
        """``done`` bytes of the step so far (of ``total``, if it is known better now)."""
        if total is not None:
            self.total = total
        self.last = done
        now = self.clock()
        # On a terminal the bar shows at once, then is redrawn now and then.
        if now - self.shown >= (BAR_EVERY if self.tty else LINE_EVERY) or (
            self.tty and not self.drawn
        ):
            self.shown = now
            self._show(done, now)

    def _show(self, done: int, now: float) -> None:
        elapsed = _clock(now - self.started)
        share = min(done / self.total, 1.0) if self.total else None
        if self.tty:
            width = max(10, min(40, shutil.get_terminal_size().columns - 60))
            bar = ""
            if share is not None:
                filled = int(width * share)
                bar = f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%} "
            self._write(f"\r{self.what}: {bar}{human(done)} {elapsed}\x1b[K")
            self.drawn = True
        else:
            part = human(done)
            if share is not None:
                part = f"{share:.0%} ({human(done)} of {human(self.total or 0)})"
            self._write(f"{self.prog}: {self.what}: {part}, {elapsed}\n")

    def done(self) -> None:
        """End the step: on a terminal, the bar is drawn as it ended and its line ended."""
        if self.drawn:
            self._show(self.last, self.clock())
            self._write("\n")
            self.drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
