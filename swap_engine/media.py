"""User media at the door: tell photos from videos by their bytes, and load photos safely as RGB arrays.

Contract:
- ``sniff_kind(path) -> "image" | "video" | None`` reads the first bytes only; the file name's extension is ignored
  (uploads are often misnamed). Images: JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC/HEIF/AVIF. Videos: MP4/MOV/M4V/3GP
  (ISO base media ``ftyp``), WebM/MKV (EBML), AVI.
- ``load_image(path, *, max_pixels) -> np.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, with the EXIF
  orientation applied (so a phone photo taken upright comes out upright). Transparent pixels are laid on white;
  animated images give their first frame. The pixel count is checked from the header, before anything is decoded.
- Refusals are ``UnsupportedMedia`` (missing, empty, not an image, HEIC without a decoder, corrupt or truncated) or
  ``MediaTooLarge`` (more than ``max_pixels``: a decompression bomb or simply too big), each naming the file and
  the fix.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from common.errors import MediaTooLarge, UnsupportedMedia

MediaKind = Literal["image", "video"]
DEFAULT_MAX_PIXELS = 40_000_000

_PHOTO_HINT = "Send a JPEG, PNG or WebP photo."
# ISO base media brands that are still images rather than movies.
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
# Old QuickTime files may start with one of these atoms instead of "ftyp".
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def _head(path: Path, count: int = 32) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(count)


def _kind_of(head: bytes) -> tuple[MediaKind, str] | None:
    """(kind, format name) for the first bytes of a file, or None when unrecognised."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF"
    if head.startswith(b"BM") and len(head) >= 14:
        return "image", "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "TIFF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image", "WebP"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video", "AVI"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "WebM/Matroska"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return "image", "HEIC/AVIF"
        return "video", "MP4/MOV"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "video", "MOV"
    return None


def sniff_kind(path: Path) -> MediaKind | None:
    """ "image", "video" or None (unknown, empty or unreadable), judged by the file's first bytes."""
    try:
        found = _kind_of(_head(Path(path)))
    except OSError:
        return None
    return found[0] if found else None


def load_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a photo into an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    Raises ``UnsupportedMedia`` or ``MediaTooLarge`` (see the module docstring); never a Pillow exception.
    """
    path = Path(path)
    name = path.name
    try:
        head = _head(path)
    except FileNotFoundError:
        raise UnsupportedMedia(f"{name} does not exist.", hint="Check the file name.") from None
    except OSError as exc:
        raise UnsupportedMedia(f"{name} cannot be read: {exc.strerror or exc}.", hint=_PHOTO_HINT) from exc
    if not head:
        raise UnsupportedMedia(
            f"{name} is empty (0 bytes).", hint="The upload may have failed; send it again."
        )
    found = _kind_of(head)
    if found is None:
        raise UnsupportedMedia(
            f"{name} is not a photo famswap can read (its content is no image format).", hint=_PHOTO_HINT
        )
    kind, fmt = found
    if kind == "video":
        raise UnsupportedMedia(
            f"{name} is a video ({fmt}), not a photo.", hint="Send it as a video, or send a photo."
        )

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own pixel limit; ours is checked just below, from the same header.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as exc:
        # Pillow refused before we could read the size; its message carries the pixel count.
        count = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(name, int(count.group(1)) if count else None, max_pixels) from None
    except Exception as exc:  # Pillow raises many types for hostile input; all mean "cannot read".
        if fmt == "HEIC/AVIF":
            raise UnsupportedMedia(
                f"{name} is a HEIC/AVIF photo, which this server cannot decode.",
                hint="On the phone, share it as JPEG (iPhone: Settings → Camera → Formats → Most Compatible).",
            ) from exc
        raise UnsupportedMedia(f"{name} is not a readable {fmt} image ({exc}).", hint=_PHOTO_HINT) from exc

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(name, (width, height), max_pixels)
        if width < 1 or height < 1:
            raise UnsupportedMedia(f"{name} has no pixels ({width}x{height}).", hint=_PHOTO_HINT)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.seek(0)
                image.load()  # decodes; raises on truncated or corrupt data
        except Exception as exc:  # same reason as above: any decoder failure is a damaged file
            raise UnsupportedMedia(
                f"{name} is damaged or truncated and cannot be decoded ({exc}).",
                hint="Send the original photo again (the upload may have been cut short).",
            ) from exc
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:  # a malformed EXIF block must not cost the photo: use it as stored
            upright = image
        # Inside the ``with``: a closed Pillow image no longer gives its pixels.
        array = np.asarray(_to_rgb(upright), dtype=np.uint8)
    return np.ascontiguousarray(array)


def _too_large(name: str, size: tuple[int, int] | int | None, max_pixels: int) -> MediaTooLarge:
    if isinstance(size, tuple):
        what = f"{size[0]}x{size[1]} pixels"
    elif size is not None:
        what = f"{size / 1e6:.0f} megapixels"
    else:
        what = "too many pixels"
    return MediaTooLarge(
        f"{name} is {what}, more than the {max_pixels / 1e6:g} megapixels famswap accepts.",
        hint="Send a smaller photo (any phone photo resized to 4000 pixels wide is plenty).",
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency composited over white rather than turned black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping to white.
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size and values.max() > 0 else 1.0
        grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1))
    return image.convert("RGB")
