"""The import's progress on stderr: on a terminal one line rewritten in place (percent, rows done of
the total, created/updated/existing/rejected, rows/s, ETA); otherwise (a log, CI) a line every few
seconds. Written here rather than taken from a library: it is one line of text, and the CLI ships
in the image, where every dependency counts."""

import sys
import time
from collections.abc import Callable
from typing import TextIO

COUNTS = ("created", "updated", "existing", "rejected")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(
        self,
        total: int,
        *,
        start_at: int = 0,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self.clock = clock
        self.enabled = enabled
        self.started, self.start_at = clock(), start_at  # rows/s counts this run's rows only
        self.last_shown: float | None = None
        self.width = 0

    def line(self, done: int, counts: dict[str, int]) -> str:
        percent = 100.0 * done / self.total if self.total else 100.0
        elapsed = self.clock() - self.started
        rate = (done - self.start_at) / elapsed if elapsed > 0 else 0.0
        eta = duration((self.total - done) / rate) if rate > 0 and done < self.total else "--"
        tallies = " ".join(f"{name} {counts.get(name, 0)}" for name in COUNTS)
        bar = ""
        if self.tty:
            filled = int(20 * percent / 100)
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        return f"{bar}{percent:5.1f}% {done}/{self.total} rows | {tallies} | {rate:,.0f} rows/s | ETA {eta}"

    def update(self, done: int, counts: dict[str, int], *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and self.last_shown is not None and now - self.last_shown < self.interval:
            return
        self.last_shown = now
        text = self.line(done, counts)
        if self.tty:
            self.stream.write("\r" + text + " " * max(0, self.width - len(text)))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A message between updates (a retry, a warning), not overwritten by the next update."""
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.stream.write(message + "\n")
        self.stream.flush()

    def finish(self, done: int, counts: dict[str, int]) -> None:
        self.update(done, counts, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
