"""The one configuration object: read once at start-up from FAMSWAP_* environment variables and an optional .env."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import ConfigError, MissingToken

DISCORD_API_DEFAULT = "https://discord.com/api/v10"
DISCORD_GATEWAY_DEFAULT = "wss://gateway.discord.gg"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_MODEL_NAMES = ("auto", "lite", "original", "hires")
_QUALITIES = ("preview", "best")
BEST_FACTOR = 3.0  # a "best" swap trains this many times the preview budget


def _default_home() -> Path:
    # platformdirs gives the per-user data folder of each OS (~/.local/share/famswap on Linux).
    from platformdirs import user_data_path

    return user_data_path("famswap", appauthor=False)


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value.", hint=f"Set {name} to 1 or 0.")


def _parse_number(kind: Callable[[Any], Any], minimum: float) -> Callable[[str, str], Any]:
    def parse(name: str, raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} is not a number.", hint=f"Set {name} to a number such as {kind(minimum) or 1}."
            ) from None
        if value < minimum:
            raise ConfigError(f"{name}={raw!r} is too small.", hint=f"Set {name} to at least {minimum}.")
        return value

    return parse


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}.", hint=f"Set {name} to one of them.")
        return value

    return parse


def _parse_device(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if not _DEVICE_RE.match(value):
        raise ConfigError(f"{name}={raw!r} is not a device.", hint=f"Set {name} to auto, cpu, cuda or cuda:N.")
    return value


def _parse_path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise ConfigError(f"{name} is set but empty.", hint=f"Unset {name} or give it a folder path.")
    return Path(raw.strip()).expanduser()


# Settings that name a file or folder. They are made absolute once, at start-up, and exported again
# (``Settings.path_environ``) so that every child process sees the same folders whatever its working folder.
PATH_VARIABLES = ("FAMSWAP_HOME", "FAMSWAP_MODEL_DIR", "FAMSWAP_KEY_FILE")


def absolute_path(raw: str, base: Path) -> str:
    """``raw`` (``~`` expanded) as an absolute path, taken relative to ``base`` when it is relative.

    ``..`` is folded away; symbolic links are kept as written.
    """
    path = Path(raw.strip()).expanduser()
    return os.path.abspath(path if path.is_absolute() else base / path)


def _parse_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not re.match(r"^(https?|wss?)://", value):
        raise ConfigError(f"{name}={raw!r} is not a URL.", hint=f"Set {name} to an http(s):// or ws(s):// address.")
    return value


def _parse_text(name: str, raw: str) -> str:
    return raw.strip()


def _parse_ids(name: str, raw: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[\s,]+", raw.strip()) if p]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"{name}={raw!r} is not a list of server ids.",
                          hint=f"Set {name} to server ids separated by commas (empty: any server).")
    return tuple(int(p) for p in parts)


def _setting(env: str, parse: Callable[[str, str], Any], default: Any = None, *, factory: Any = None) -> Any:
    meta = {"env": env, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every knob of famswap. Build it once with ``Settings.load()`` and pass it down; never read os.environ later."""

    home: Path = _setting("FAMSWAP_HOME", _parse_path, factory=_default_home)
    discord_token: str = _setting("DISCORD_TOKEN", _parse_text, "")
    model_dir: Path | None = _setting("FAMSWAP_MODEL_DIR", _parse_path, None)
    device: str = _setting("FAMSWAP_DEVICE", _parse_device, "auto")
    key_file: Path | None = _setting("FAMSWAP_KEY_FILE", _parse_path, None)
    log_level: str = _setting("FAMSWAP_LOG_LEVEL", _parse_choice(("debug", "info", "warning", "error")), "info")
    discord_api: str = _setting("FAMSWAP_DISCORD_API", _parse_url, DISCORD_API_DEFAULT)
    discord_gateway: str = _setting("FAMSWAP_DISCORD_GATEWAY", _parse_url, DISCORD_GATEWAY_DEFAULT)
    # Limits on what users may send.
    max_upload_mb: float = _setting("FAMSWAP_MAX_UPLOAD_MB", _parse_number(float, 0.1), 50.0)
    max_clip_seconds: float = _setting("FAMSWAP_MAX_CLIP_SECONDS", _parse_number(float, 1), 60.0)
    max_photos_per_identity: int = _setting("FAMSWAP_MAX_PHOTOS", _parse_number(int, 1), 60)
    max_image_pixels: int = _setting("FAMSWAP_MAX_IMAGE_PIXELS", _parse_number(int, 10_000), 40_000_000)
    max_clip_pixels: int = _setting("FAMSWAP_MAX_CLIP_PIXELS", _parse_number(int, 10_000), 1920 * 1080)
    # A clip's frames are what costs: both caps are checked before decoding (frames counted, not read from headers).
    max_clip_fps: float = _setting("FAMSWAP_MAX_CLIP_FPS", _parse_number(float, 1), 120.0)
    max_clip_frames: int = _setting("FAMSWAP_MAX_CLIP_FRAMES", _parse_number(int, 1), 3600)
    # Engine defaults.
    model: str = _setting("FAMSWAP_MODEL", _parse_choice(_MODEL_NAMES), "auto")
    quality: str = _setting("FAMSWAP_QUALITY", _parse_choice(_QUALITIES), "preview")
    # Training budget of a "preview" swap (the default quality); a "best" swap trains BEST_FACTOR times as long.
    train_minutes_cpu: float = _setting("FAMSWAP_TRAIN_MINUTES_CPU", _parse_number(float, 0.05), 10.0)
    train_minutes_gpu: float = _setting("FAMSWAP_TRAIN_MINUTES_GPU", _parse_number(float, 0.05), 5.0)
    # The warm bank: minutes a day each server's bank may train while the worker has nothing else to do (0 = off),
    # and the share of the budget above a swap trains once its person's decoder is warm (storage.WARM_READY_STEPS).
    # 60: enough to warm a newly enrolled person past WARM_READY_STEPS the same day even with a few people
    # (2000 steps of three people took 32 min of the shared 2-core CPU), and at most 4 % of a day of the CPU.
    warm_minutes_per_day: float = _setting("FAMSWAP_WARM_MINUTES_PER_DAY", _parse_number(float, 0), 60.0)
    # 1/3: from a bank warmed 2000 steps, 850 swap steps (a third of the 10-minute default's 2633-2655) matched or
    # beat that default on likeness in both measured pairs (docs/QUALITY.md, "Warm bank").
    warm_swap_share: float = _setting("FAMSWAP_WARM_SWAP_SHARE", _parse_number(float, 0.05), 1 / 3)
    # 0 = automatic: one thread on hosts with two cores or fewer (measured: 4-7x faster training there when
    # anything else runs beside it), torch's own default elsewhere.
    torch_threads: int = _setting("FAMSWAP_TORCH_THREADS", _parse_number(int, 0), 0)
    output_max_mb: float = _setting("FAMSWAP_OUTPUT_MAX_MB", _parse_number(float, 0.5), 10.0)
    # Queue and retention.
    max_queued_per_user: int = _setting("FAMSWAP_MAX_QUEUED_PER_USER", _parse_number(int, 1), 3)
    max_queued_per_guild: int = _setting("FAMSWAP_MAX_QUEUED_PER_GUILD", _parse_number(int, 1), 20)
    daily_jobs_per_user: int = _setting("FAMSWAP_DAILY_JOBS_PER_USER", _parse_number(int, 1), 20)
    # Host-wide, every server together: a bot invited to many servers still does this much at most.
    max_queued_total: int = _setting("FAMSWAP_MAX_QUEUED_TOTAL", _parse_number(int, 1), 50)
    daily_jobs_total: int = _setting("FAMSWAP_DAILY_JOBS_TOTAL", _parse_number(int, 1), 200)
    # The servers the bot serves (empty: any that invites it); it leaves the others.
    allowed_guilds: tuple[int, ...] = _setting("FAMSWAP_ALLOWED_GUILDS", _parse_ids, ())
    result_days: float = _setting("FAMSWAP_RESULT_DAYS", _parse_number(float, 0.01), 30.0)
    keep_uploads: bool = _setting("FAMSWAP_KEEP_UPLOADS", _parse_bool, False)
    guild_grace_days: float = _setting("FAMSWAP_GUILD_GRACE_DAYS", _parse_number(float, 0), 7.0)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
        """Read settings from ``environ`` (default: the process environment) and ``env_file`` (default ``./.env``).

        Variables already in the environment win over the file. Raises ConfigError naming the variable at fault.
        """
        env = dict(os.environ if environ is None else environ)
        cwd = Path.cwd()
        path = env_file if env_file is not None else Path(env.get("FAMSWAP_ENV_FILE", ".env"))
        # A relative path means: from the working folder (environment) or from the .env file's own folder.
        for key in PATH_VARIABLES:
            if env.get(key, "").strip():
                env[key] = absolute_path(env[key], cwd)
        for key, value in read_env_file(path).items():
            if key in env:
                continue
            env[key] = absolute_path(value, (cwd / path).parent) if key in PATH_VARIABLES and value.strip() else value
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
        return cls(**values)

    def path_environ(self) -> dict[str, str]:
        """The folders this process uses, absolute, as environment variables for the processes it starts."""
        env = {"FAMSWAP_HOME": str(self.home)}
        if self.model_dir is not None:
            env["FAMSWAP_MODEL_DIR"] = str(self.model_dir)
        if self.key_file is not None:
            env["FAMSWAP_KEY_FILE"] = str(self.key_file)
        return env

    # Derived locations: one place decides the layout of the data home.
    @property
    def database_path(self) -> Path:
        return self.home / "famswap.sqlite3"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def models_path(self) -> Path:
        """Where model files (face_landmarker.task) are looked up and downloaded to."""
        return self.model_dir if self.model_dir is not None else self.home / "models"

    @property
    def key_path(self) -> Path:
        """The encryption key lives outside the data home by default, so a copied home reveals no face."""
        if self.key_file is not None:
            return self.key_file
        from platformdirs import user_config_path

        return user_config_path("famswap", appauthor=False) / "famswap.key"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def output_max_bytes(self) -> int:
        return int(self.output_max_mb * 1024 * 1024)

    def train_seconds(self, device: str, quality: str | None = None) -> float:
        """The training budget of a swap on ``device`` ("cpu", "cuda", "cuda:N") at ``quality`` (default: setting)."""
        minutes = self.train_minutes_gpu if device.startswith("cuda") else self.train_minutes_cpu
        return minutes * 60.0 * (BEST_FACTOR if (quality or self.quality) == "best" else 1.0)

    def swap_train_seconds(self, device: str, quality: str | None, *, warm: bool) -> float:
        """A swap's training budget: ``train_seconds``, times ``warm_swap_share`` when its person's decoder is warm."""
        return self.train_seconds(device, quality) * (min(1.0, self.warm_swap_share) if warm else 1.0)

    def torch_thread_count(self) -> int | None:
        """Threads torch should use, or None to leave torch's default."""
        if self.torch_threads:
            return self.torch_threads
        return 1 if (os.cpu_count() or 1) <= 2 else None

    def require_token(self) -> str:
        if not self.discord_token:
            raise MissingToken(
                "No Discord bot token is set.",
                hint="Set DISCORD_TOKEN (in the environment or a .env file next to where you run famswap) "
                "to the token from https://discord.com/developers/applications → your app → Bot → Reset Token.",
            )
        return self.discord_token


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a simple KEY=VALUE .env file (comments, blank lines, optional quotes, optional 'export ')."""
    if not path.is_file():
        return {}
    result: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key.strip()):
            raise ConfigError(f"{path}:{number} is not a KEY=VALUE line.", hint="Fix or remove that line.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key.strip()] = value
    return result
