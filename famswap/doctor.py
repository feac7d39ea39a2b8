"""`famswap doctor`: one screen that says what this install found (Python, torch/CUDA, model file, ffmpeg, data home)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

from common.config import Settings


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str


def _python() -> Check:
    return Check("python", True, f"{platform.python_version()} ({platform.python_implementation()})")


def _torch(settings: Settings) -> Check:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency
        return Check("torch", False, f"not importable: {exc}. Install it first: pip install torch")
    if torch.cuda.is_available():
        names = ", ".join(
            f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        )
        detail = f"{torch.__version__}; GPUs: {names}"
    else:
        detail = f"{torch.__version__}; no CUDA GPU — training and swapping run on the CPU (slower, smaller model)"
    ok = not (settings.device.startswith("cuda") and not torch.cuda.is_available())
    if not ok:
        detail += f"; but FAMSWAP_DEVICE={settings.device} asks for one"
    return Check("torch", ok, detail)


def _model(settings: Settings, file: str) -> Check:
    from swap_engine.assets import MODEL_FILES, verify_file

    spec = next(m for m in MODEL_FILES if m.file == file)
    path = settings.models_path / spec.file
    if not path.is_file():
        return Check(
            spec.what,
            False,
            f"{path} not downloaded yet (it is fetched on first use; set FAMSWAP_MODEL_DIR to a folder that holds it)",
        )
    good = verify_file(path, spec.sha256)
    return Check(spec.what, good, f"{path} checksum {'ok' if good else 'MISMATCH — delete the file'}")


def _ffmpeg() -> Check:
    from swap_engine.ffmpeg_bin import MIN_VERSION, find_ffmpeg, release_text, unusable_because

    try:
        tools = find_ffmpeg()
    except Exception as exc:  # noqa: BLE001 - the doctor reports every failure as a line
        return Check("ffmpeg", False, str(exc))
    problem = unusable_because(tools)
    if problem is not None:
        return Check("ffmpeg", False, f"{tools.source}: {problem}")
    probe = tools.ffprobe or "none (probing parses ffmpeg's output)"
    detail = (
        f"{tools.source}: {tools.ffmpeg}, version {tools.version} — usable (famswap needs "
        f"{release_text(MIN_VERSION)} or newer with libx264); ffprobe: {probe}"
    )
    if tools.skipped:
        detail += f". Not used: {tools.skipped}"
    return Check("ffmpeg", True, detail)


def _home(settings: Settings) -> Check:
    home = settings.home
    exists = home.is_dir()
    detail = f"{home} ({'exists' if exists else 'will be created on first use'})"
    db = settings.database_path
    if db.is_file():
        import sqlite3

        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            detail += f"; database schema version {version}"
        except sqlite3.Error as exc:
            return Check("data home", False, f"{detail}; database unreadable: {exc}")
    else:
        detail += "; no database yet"
    return Check("data home", True, detail)


def _token(settings: Settings) -> Check:
    if settings.discord_token:
        return Check("discord", True, f"token set; API {settings.discord_api}")
    return Check("discord", True, "no DISCORD_TOKEN set (needed only for `famswap run`)")


def run_checks(settings: Settings) -> list[Check]:
    """Run every check; none raises."""
    checks: list[Callable[[], Check]] = [
        _python,
        lambda: _torch(settings),
        lambda: _model(settings, "face_landmarker.task"),
        lambda: _model(settings, "hair_segmenter.tflite"),
        _ffmpeg,
        lambda: _home(settings),
        lambda: _token(settings),
    ]
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as exc:  # noqa: BLE001 - a broken check is itself a finding
            results.append(Check(getattr(check, "__name__", "check"), False, f"check failed: {exc}"))
    return results


def format_report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{'ok ' if c.ok else 'NO '} {c.name.ljust(width)}  {c.detail}" for c in checks)
