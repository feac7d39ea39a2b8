"""A stand-in ffmpeg for tests of how famswap chooses its ffmpeg: answers ``-version`` and ``-encoders`` only."""

from __future__ import annotations

from pathlib import Path


def fake_tool(folder: Path, name: str, version: str = "6.1-fake", encoders: str = "libx264 aac") -> Path:
    """A stand-in that answers ``-version`` and ``-encoders`` the way ffmpeg prints them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    listing = "\\n".join(f" V....D {enc:<20} {enc} encoder" for enc in encoders.split())
    path.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do\n'
        f'  if [ "$arg" = "-encoders" ]; then printf "Encoders:\\n V..... = Video\\n ------\\n{listing}\\n"; exit 0; fi\n'
        "done\n"
        f'echo "{name} version {version} Copyright (c) the test"\n'
    )
    path.chmod(0o755)
    return path
