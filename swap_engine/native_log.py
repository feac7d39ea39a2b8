"""Keep native start-up chatter off the terminal: ``quiet_native_stderr()`` filters what C++ writes to fd 2.

MediaPipe's C++ side (absl/glog, TFLite) writes straight to file descriptor 2 while a graph starts: ``WARNING:
Logging before InitGoogle() …``, ``W0000 … face_landmarker_graph.cc:181] …``, ``INFO: Created TensorFlow Lite
XNNPACK delegate …``. ``GLOG_minloglevel`` does not reach that build's logger, and Python's ``sys.stderr`` is not
involved, so the only place to catch it is the descriptor itself.

Contract of ``with quiet_native_stderr(): …``:
- fd 2 points at a private temporary file for the duration of the block (a file, not a pipe: nothing has to read it
  while native code runs, so it can never fill up and stall that code).
- On leaving (also by an exception), fd 2 is restored and every captured line that is not known chatter
  (``is_chatter``) is written to the real stderr, in order: ``E``/``F`` lines, Python tracebacks, any other text.
  Chatter lines go to this module's logger at DEBUG level, so ``FAMSWAP_LOG_LEVEL=debug`` still shows them.
- fd 2 is process-wide: text other threads print during the block is held back until it ends, not lost. Blocks may
  nest and may run in several threads at once; the outermost one to end restores fd 2.
- Where fd 2 cannot be duplicated (closed), the block runs unfiltered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

log = logging.getLogger(__name__)

# glog/absl INFO and WARNING lines: "W0000 00:00:1796141812.561308   31380 face_landmarker_graph.cc:181] text".
# (Before InitGoogle the time field is "00:00:<epoch seconds>.<micros>", hence the loose pattern.)
_GLOG_INFO_WARNING = re.compile(rb"^[IW]\d{4} [\d:.]+\s+\d+ [^\s:]+:\d+\] ")
_CHATTER = (
    re.compile(rb"^WARNING: Logging before InitGoogle\(\) is written to STDERR\s*$"),
    re.compile(rb"^INFO: "),  # TFLite's own logger: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    _GLOG_INFO_WARNING,
)

_lock = threading.Lock()
_depth = 0  # blocks open, all threads together
_saved_fd: int | None = None  # the real stderr while a block is open
_capture: IO[bytes] | None = None


def is_chatter(line: bytes) -> bool:
    """True for a native log line users cannot act on (glog/absl INFO/WARNING, TFLite INFO); errors are not."""
    return any(pattern.match(line) for pattern in _CHATTER)


def filter_chatter(text: bytes) -> tuple[bytes, list[bytes]]:
    """``(kept, dropped)``: ``text`` without its chatter lines (line ends kept), and the chatter lines."""
    kept: list[bytes] = []
    dropped: list[bytes] = []
    for line in text.splitlines(keepends=True):
        (dropped if is_chatter(line) else kept).append(line)
    return b"".join(kept), dropped


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Run the block with fd 2 captured; pass on what is not chatter when it ends. See the module docstring."""
    if not _enter():
        yield
        return
    try:
        yield
    finally:
        _leave()


def _enter() -> bool:
    """Count one more open block, capturing fd 2 if it is the first; False when fd 2 cannot be captured."""
    global _depth, _saved_fd, _capture
    with _lock:
        if _depth == 0:
            capture = tempfile.TemporaryFile()
            try:
                _flush_python_stderr()
                saved = os.dup(2)
                os.dup2(capture.fileno(), 2)
            except OSError:
                capture.close()
                return False
            _saved_fd, _capture = saved, capture
        _depth += 1
        return True


def _leave() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            _restore()


def _restore() -> None:
    """Point fd 2 back at the real stderr and pass on the captured text that is not chatter (lock held)."""
    global _saved_fd, _capture
    assert _saved_fd is not None and _capture is not None
    _flush_python_stderr()
    os.dup2(_saved_fd, 2)
    os.close(_saved_fd)
    capture, _saved_fd, _capture = _capture, None, None
    with capture:
        capture.seek(0)
        kept, dropped = filter_chatter(capture.read())
    for line in dropped:
        log.debug("native: %s", line.decode("utf-8", "replace").rstrip())
    if kept:
        _write_all(2, kept)


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # stderr is gone; nothing sensible to do with the text
        view = view[written:]
