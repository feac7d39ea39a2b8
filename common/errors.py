"""Domain errors shared by the engine, storage, worker, CLI and bot: each carries a message a user can act on."""

from __future__ import annotations


class FamswapError(Exception):
    """Base of every error famswap expects; ``str(err)`` is safe to show to a user, ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_text(self) -> str:
        """The message and, when there is one, the hint: what the CLI prints and the bot replies."""
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(FamswapError):
    """A setting (environment variable or .env line) has a value famswap cannot use."""


class MissingToken(ConfigError):
    """The bot was asked to start without a Discord token."""


class ModelFileError(FamswapError):
    """A model file is missing, cannot be downloaded, or fails its checksum."""


class FFmpegNotFound(FamswapError):
    """Neither a system ffmpeg nor the bundled imageio-ffmpeg binary could be found."""


class MediaError(FamswapError):
    """Base for problems with a user's photo or video."""


class UnsupportedMedia(MediaError):
    """The file is not a photo or video famswap can read (wrong type, corrupt, truncated, empty)."""


class MediaTooLarge(MediaError):
    """The file is too big: bytes, pixels (decompression bomb) or seconds."""


class NoFaceFound(MediaError):
    """No usable human face was found where one was needed."""


class TooManyFaces(MediaError):
    """Several faces where exactly one was required and none was chosen."""


class EncodeError(MediaError):
    """ffmpeg failed to write a video or could not reach the requested size."""


class TrainingError(FamswapError):
    """Training could not run (for example: the GPU ran out of memory even with the smallest batch)."""


class JobCancelled(FamswapError):
    """The job was cancelled by its owner or an admin while it ran."""


class NotFound(FamswapError):
    """A named identity, job or result does not exist (or is not visible to the asker)."""


class NotAllowed(FamswapError):
    """The asker may not do this (no grant, not the owner, channel or role restricted)."""


class QuotaExceeded(FamswapError):
    """A per-user or per-guild limit on jobs was reached."""
