"""Model files: find, checksum-verify and (on first use) atomically download MediaPipe's model files.

Contract:
- ``model_path(model_dir, spec)`` returns ``model_dir / spec.file`` only once its SHA-256 matches ``spec.sha256``.
  A present file with another checksum is never used and never silently replaced: it raises ``ModelFileError``
  telling the user to delete it. An absent file is downloaded from ``spec.url`` (or ``url``) into a temporary file
  in the same folder, verified, then moved into place with ``os.replace``, so a crash or a failed download never
  leaves a half-written model behind.
- ``landmarker_path(model_dir)`` is that for ``LANDMARKER`` (``face_landmarker.task``), ``hair_segmenter_path``
  for ``HAIR_SEGMENTER`` (``hair_segmenter.tflite``); ``MODEL_FILES`` lists both.
- ``verify_file(path, sha256)`` is the plain check ``famswap doctor`` uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.errors import ModelFileError


@dataclass(frozen=True)
class ModelFile:
    """One official model file: its name in the model folder, where it comes from, and what it must hash to."""

    file: str
    url: str
    sha256: str
    size: int  # bytes
    what: str  # how messages name it


LANDMARKER = ModelFile(
    file="face_landmarker.task",
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3_758_596,
    what="face model",
)
HAIR_SEGMENTER = ModelFile(
    file="hair_segmenter.tflite",
    url="https://storage.googleapis.com/mediapipe-models/image_segmenter/hair_segmenter/float32/1/hair_segmenter.tflite",
    sha256="2628cf3ce5f695f604cbea2841e00befcaa3624bf80caf3664bef2656d59bf84",
    size=781_618,
    what="hair model",
)
MODEL_FILES = (LANDMARKER, HAIR_SEGMENTER)

# The landmarker's fields under their first names (famswap doctor and older callers use them).
LANDMARKER_FILE = LANDMARKER.file
OFFICIAL_URL = LANDMARKER.url
LANDMARKER_SHA256 = LANDMARKER.sha256
LANDMARKER_BYTES = LANDMARKER.size

_CHUNK = 1 << 16
_TIMEOUT_S = 30.0
# Files already verified in this process, keyed by path, with the (size, mtime_ns) they had then: a file that is
# replaced or touched is hashed again, an untouched one is not re-hashed on every job.
_verified: dict[Path, tuple[int, int]] = {}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, sha256: str) -> bool:
    """True when ``path`` is a readable file whose SHA-256 is ``sha256`` (hex, any case)."""
    try:
        return sha256_file(Path(path)) == sha256.lower()
    except OSError:
        return False


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _env_hint(model_dir: Path, spec: ModelFile = LANDMARKER) -> str:
    return (
        f"Download it by hand from {spec.url} into a folder and set FAMSWAP_MODEL_DIR to that folder "
        f"(now looking in {model_dir})."
    )


def landmarker_path(
    model_dir: Path, *, download: bool = True, progress: bool = True, url: str | None = None
) -> Path:
    """The verified ``face_landmarker.task`` in ``model_dir`` (see ``model_path``)."""
    return model_path(model_dir, LANDMARKER, download=download, progress=progress, url=url)


def hair_segmenter_path(
    model_dir: Path, *, download: bool = True, progress: bool = True, url: str | None = None
) -> Path:
    """The verified ``hair_segmenter.tflite`` in ``model_dir`` (see ``model_path``)."""
    return model_path(model_dir, HAIR_SEGMENTER, download=download, progress=progress, url=url)


def model_path(
    model_dir: Path,
    spec: ModelFile,
    *,
    download: bool = True,
    progress: bool = True,
    url: str | None = None,
) -> Path:
    """Return the verified ``spec.file`` in ``model_dir``, downloading it there (from ``url`` or ``spec.url``)
    when absent.

    Raises ``ModelFileError`` when the file present has the wrong checksum, when it is absent and ``download`` is
    False, or when the download fails (offline, server error, wrong bytes, folder not writable).
    """
    model_dir = Path(model_dir)
    path = model_dir / spec.file
    if path.is_file():
        key = path.resolve()
        stamp = _stamp(path)
        if _verified.get(key) == stamp:
            return path
        if not verify_file(path, spec.sha256):
            raise ModelFileError(
                f"{path} is not the expected {spec.what}: its SHA-256 does not match (truncated, corrupted or a "
                f"different version).",
                hint=f"Delete it and famswap will download it again from {spec.url}, "
                "or point FAMSWAP_MODEL_DIR at a folder holding the right file.",
            )
        _verified[key] = stamp
        return path
    if path.exists():
        raise ModelFileError(
            f"{path} exists but is not a file.", hint="Remove it so the model can be downloaded."
        )
    if not download:
        raise ModelFileError(f"The {spec.what} {path} is missing.", hint=_env_hint(model_dir, spec))
    _download(url or spec.url, path, spec, progress=progress)
    _verified[path.resolve()] = _stamp(path)
    return path


def _download(url: str, path: Path, spec: ModelFile, *, progress: bool) -> None:
    """Fetch ``url`` into ``path`` atomically, checking the size cap and the SHA-256 before the rename."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{spec.file}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise ModelFileError(
            f"Cannot write the {spec.what} into {folder}: {exc}.",
            hint="Make that folder writable, or set FAMSWAP_MODEL_DIR to a writable folder that holds the model.",
        ) from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _fetch(url, out, folder, spec, progress=progress)
        if digest != spec.sha256:
            raise ModelFileError(
                f"The {spec.what} downloaded from {url} has the wrong SHA-256 ({digest[:12]}…); it was discarded.",
                hint="Try again later. " + _env_hint(folder, spec),
            )
        os.chmod(temp, 0o644)  # mkstemp makes it owner-only; a model file is not a secret
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _fetch(url: str, out: BinaryIO, folder: Path, spec: ModelFile, *, progress: bool) -> str:
    """Stream ``url`` into ``out``; return the hex SHA-256 of what was written."""
    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or spec.size)
            while chunk := response.read(_CHUNK):
                done += len(chunk)
                if done > 2 * spec.size:
                    # Whatever this is, it is not the model: stop before filling the disk.
                    raise ModelFileError(
                        f"{url} sent more than {2 * spec.size} bytes, far more than the {spec.what}.",
                        hint=_env_hint(folder, spec),
                    )
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    _show_progress(spec.file, done, total)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts and refused connections are OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise ModelFileError(
            f"Could not download the {spec.what} from {url}: {reason}.",
            hint="Check this machine's internet connection. " + _env_hint(folder, spec),
        ) from exc
    finally:
        if progress and done:
            sys.stderr.write("\n")
            sys.stderr.flush()
    return digest.hexdigest()


def _show_progress(name: str, done: int, total: int) -> None:
    fraction = min(done / total, 1.0) if total else 0.0
    width = 30
    bar = "#" * int(fraction * width)
    sys.stderr.write(
        f"\rDownloading {name} [{bar:<{width}}] {fraction:4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB"
    )
    sys.stderr.flush()
