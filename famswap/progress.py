"""Terminal progress bars for the CLI: one bar per stage, redrawn in place on a terminal, sparse lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def bar_text(label: str, done: float, total: float, elapsed: float, width: int = 24, extra: str = "") -> str:
    """``label  [#########.......]  45%  12/30  0:12 left`` — pure, for tests and the bot's status text alike."""
    fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = int(round(fraction * width))
    eta = (elapsed / fraction - elapsed) if fraction > 0 else None
    parts = [f"{label:<10}", f"[{'#' * filled}{'.' * (width - filled)}]", f"{fraction * 100:3.0f}%"]
    if total > 0:
        parts.append(f"{done:g}/{total:g}")
    if eta is not None and fraction < 1:
        parts.append(f"{format_duration(eta)} left")
    elif fraction >= 1:
        parts.append(f"done in {format_duration(elapsed)}")
    if extra:
        parts.append(extra)
    return "  ".join(parts)


class StageBar:
    """A progress bar for one stage. ``update(done, total, extra)``; ``close()`` prints the final state."""

    def __init__(self, label: str, stream: TextIO | None = None, min_interval: float = 0.2) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.min_interval = min_interval if self.tty else 10.0
        self._last_draw = 0.0
        self._state: tuple[float, float, str] = (0.0, 0.0, "")

    def update(self, done: float, total: float, extra: str = "") -> None:
        self._state = (done, total, extra)
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval:
            self._draw(now)

    def _draw(self, now: float, final: bool = False) -> None:
        done, total, extra = self._state
        text = bar_text(self.label, done, total, now - self.start, extra=extra)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last_draw = now

    def close(self, extra: str | None = None) -> None:
        done, total, old_extra = self._state
        if total and done < total:
            done = total
        self._state = (done, total, old_extra if extra is None else extra)
        self._draw(time.monotonic(), final=True)

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
