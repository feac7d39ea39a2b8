"""One logging setup for every famswap process: short human-readable lines on stderr."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "info", *, process: str | None = None) -> None:
    """Configure the root logger once; ``process`` (e.g. "worker-1") is prefixed so mixed output stays readable."""
    # MediaPipe's C++ side (glog/absl/TFLite) prints start-up chatter users cannot act on. MediaPipe 1.x ignores these
    # two variables (swap_engine.native_log filters its lines); older builds and TensorFlow read them.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    fmt = f"%(asctime)s %(levelname)-7s [{process}] %(name)s: %(message)s" if process else _FORMAT
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that narrate every request drown the lines a user needs.
    for noisy in ("discord.gateway", "discord.http", "aiosqlite", "PIL", "matplotlib", "absl"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
