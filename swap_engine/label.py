"""The visible "AI face swap" badge every output carries, and the synthetic-media metadata for its container.

Contract: frames are RGB ``uint8`` ``(H, W, 3)``. ``LabelRenderer(width, height, style)`` renders the badge once
(an anti-aliased rounded dark plate, white text in Pillow's bundled Aileron font) and ``.apply(frame)`` blends it
into a corner in well under a millisecond. ``draw_label`` does the same through a small cache of renderers.

There is deliberately no way to switch the label off: ``LabelStyle`` can move it to another corner, make it
bigger or (down to a readable minimum) smaller and change the plate's opacity within a range that keeps the text
readable on bright and dark video alike; the text is always drawn opaque. ``label_region`` tells callers and tests
where the badge lands.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

Corner = Literal["bottom-right", "bottom-left", "top-right", "top-left"]
CORNERS: tuple[str, ...] = ("bottom-right", "bottom-left", "top-right", "top-left")
DEFAULT_TEXT = "AI face swap"

# Badge height limits: relative to the frame height, and an absolute floor that keeps the text readable on
# small outputs (22 px plate = 12 px font at 360p; at 1080p the default 1/24 gives a 45 px plate).
MIN_SCALE, MAX_SCALE = 1 / 48, 1 / 8
MIN_BADGE_PX = 22
MIN_OPACITY = 0.5  # white text on the plate over a white frame stays at >= 3.5:1 contrast

# Proportions of the badge, in badge heights.
_FONT = 0.56  # font size (em)
_PAD_X = 0.45  # space left and right of the text
_RADIUS = 0.28  # corner radius
_MARGIN = 0.5  # gap to the frame edges
_PLATE_RGB = (18, 18, 20)
_TEXT_RGB = (255, 255, 255)
_RIM_ALPHA = 0.22  # a faint light rim so the plate's shape still reads on a black frame
_SUPERSAMPLE = 4

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

SYNTHETIC_METADATA: dict[str, str] = {
    # comment and description survive ffmpeg's MP4/MOV and WebM/MKV muxers as plain `-metadata key=value`
    # (its GIF and WebP muxers drop all metadata: see SYNTHETIC_XMP for images written with Pillow).
    "comment": "AI face swap — synthetic media made with famswap",
    "description": (
        "Synthetic media: a face in this video was replaced by an AI face-swap model (famswap). "
        "It does not show real events involving the people whose faces appear."
    ),
    # Machine-readable flags. MP4 keeps custom keys only with `-movflags +use_metadata_tags`; MKV/WebM keep them.
    "synthetic": "true",
    "ai_generated": "true",
    "generator": "famswap",
    # IPTC's term for media made by a trained model (the vocabulary C2PA manifests use as well).
    "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
}

_IPTC_TRAINED = SYNTHETIC_METADATA["digital_source_type"]

# The same statement as an XMP packet, for stills and animations written with Pillow, which keeps it where
# ffmpeg would not: WebP ``save(..., xmp=SYNTHETIC_XMP.encode())``, PNG ``PngInfo().add_itxt("XML:com.adobe.xmp",
# SYNTHETIC_XMP)``, JPEG ``save(..., xmp=...)``; GIF has no XMP in Pillow, use ``comment=SYNTHETIC_METADATA["comment"]``.
SYNTHETIC_XMP: str = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about=""'
    ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
    ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
    ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
    f' Iptc4xmpExt:DigitalSourceType="{_IPTC_TRAINED}"'
    ' xmp:CreatorTool="famswap">'
    '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
    f"{SYNTHETIC_METADATA['comment']}"
    "</rdf:li></rdf:Alt></dc:description>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
)


@dataclass(frozen=True)
class LabelStyle:
    """Where and how big the badge is. ``scale`` is the badge height as a fraction of the frame height
    (``MIN_SCALE``..``MAX_SCALE``, never fewer than ``MIN_BADGE_PX`` pixels); ``opacity`` is the dark plate's
    (``MIN_OPACITY``..1). Out-of-range values raise ValueError: an admin setting can move or resize the label,
    not hide it."""

    corner: Corner = "bottom-right"
    scale: float = 1 / 24
    opacity: float = 0.65

    def __post_init__(self) -> None:
        if self.corner not in CORNERS:
            raise ValueError(f"label corner must be one of {', '.join(CORNERS)}, got {self.corner!r}")
        if not MIN_SCALE <= self.scale <= MAX_SCALE:
            raise ValueError(
                f"label scale must be between 1/48 and 1/8 of the frame height, got {self.scale}"
            )
        if not MIN_OPACITY <= self.opacity <= 1.0:
            raise ValueError(f"label opacity must be between {MIN_OPACITY} and 1, got {self.opacity}")


def _font(size: int) -> ImageFont.FreeTypeFont | None:
    try:  # Pillow >= 10.1 with FreeType: the bundled, scalable Aileron Regular; no font file to ship or fetch
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return None
    return font if isinstance(font, ImageFont.FreeTypeFont) else None


def _text_width(text: str, font_px: int) -> int:
    font = _font(font_px)
    if font is not None:
        return int(np.ceil(font.getlength(text)))
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_DUPLEX, font_px)
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 1)[0][0]


def _layout(width: int, height: int, style: LabelStyle, text: str) -> tuple[Box, int]:
    """The badge box in the frame and its height: shrunk to fit frames too small or narrow for the wanted size."""
    badge_h = max(round(height * style.scale), MIN_BADGE_PX)
    badge_w = _text_width(text, round(badge_h * _FONT)) + 2 * round(badge_h * _PAD_X)
    # Badge plus margins must fit the frame; a tiny or very narrow frame gets the biggest badge that does.
    fit = min(1.0, width / (badge_w + 2 * _MARGIN * badge_h), height / ((1 + 2 * _MARGIN) * badge_h))
    if fit < 1.0:
        badge_h = max(int(badge_h * fit), 4)
        badge_w = min(_text_width(text, max(round(badge_h * _FONT), 1)) + 2 * round(badge_h * _PAD_X), width)
    margin = round(badge_h * _MARGIN)
    x0 = width - margin - badge_w if style.corner.endswith("right") else margin
    y0 = height - margin - badge_h if style.corner.startswith("bottom") else margin
    x0, y0 = max(0, min(x0, width - badge_w)), max(0, min(y0, height - badge_h))
    return (x0, y0, x0 + badge_w, y0 + badge_h), badge_h


def label_region(width: int, height: int, style: LabelStyle = LabelStyle(), text: str = DEFAULT_TEXT) -> Box:
    """Frame box ``(x0, y0, x1, y1)`` (exclusive ends) the badge covers in a ``width`` x ``height`` frame."""
    return _layout(width, height, style, text)[0]


def _render(badge_w: int, badge_h: int, text: str, opacity: float) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied colour ``(h, w, 3)`` float32 and alpha ``(h, w)`` float32 of the badge."""
    # Plate: a rounded rectangle drawn 4x larger and box-filtered down, for smooth corners.
    ss = _SUPERSAMPLE
    big = (badge_w * ss, badge_h * ss)
    radius = max(1, round(badge_h * _RADIUS * ss))
    plate_img = Image.new("L", big, 0)
    ImageDraw.Draw(plate_img).rounded_rectangle((0, 0, big[0] - 1, big[1] - 1), radius, fill=255)
    plate = np.asarray(plate_img.resize((badge_w, badge_h), Image.Resampling.BOX), np.float32) / 255
    rim_img = Image.new("L", big, 0)
    ImageDraw.Draw(rim_img).rounded_rectangle((0, 0, big[0] - 1, big[1] - 1), radius, outline=255, width=ss)
    rim = np.asarray(rim_img.resize((badge_w, badge_h), Image.Resampling.BOX), np.float32) / 255

    # Text: drawn at its final size, so FreeType's hinting keeps the strokes crisp.
    font_px = max(round(badge_h * _FONT), 1)
    text_img = Image.new("L", (badge_w, badge_h), 0)
    font = _font(font_px)
    if font is not None:
        cap = -font.getbbox("AI", anchor="ls")[1]  # cap height: centre the capitals, let 'p' descend
        baseline = round((badge_h + cap) / 2)
        x = (badge_w - font.getlength(text)) / 2
        ImageDraw.Draw(text_img).text((x, baseline), text, fill=255, font=font, anchor="ls")
        ink = np.asarray(text_img, np.float32) / 255
    else:  # Pillow without FreeType: OpenCV's Hershey font, anti-aliased
        ink_u8 = np.zeros((badge_h, badge_w), np.uint8)
        scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_DUPLEX, font_px)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
        org = ((badge_w - tw) // 2, (badge_h + th) // 2)
        cv2.putText(ink_u8, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, 255, 1, cv2.LINE_AA)
        ink = ink_u8.astype(np.float32) / 255

    # Layers, back to front: plate (opacity), rim, text; "over" compositing in premultiplied form.
    plate_a = plate * opacity
    rim_a = rim * _RIM_ALPHA
    alpha = plate_a
    colour = plate_a[..., None] * np.array(_PLATE_RGB, np.float32)
    for layer_a, rgb in ((rim_a, _TEXT_RGB), (ink, _TEXT_RGB)):
        colour = colour * (1 - layer_a[..., None]) + layer_a[..., None] * np.array(rgb, np.float32)
        alpha = alpha * (1 - layer_a) + layer_a
    return colour.astype(np.float32), alpha.astype(np.float32)


class LabelRenderer:
    """The badge for one frame size, rendered once; ``apply`` blends it into each frame of that size."""

    def __init__(
        self, width: int, height: int, style: LabelStyle = LabelStyle(), text: str = DEFAULT_TEXT
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not text.strip():
            raise ValueError("the label text must not be empty")
        self.width, self.height, self.style, self.text = width, height, style, text
        self.region, self.badge_height = _layout(width, height, style, text)
        x0, y0, x1, y1 = self.region
        self._colour, alpha = _render(x1 - x0, y1 - y0, text, style.opacity)
        self._keep = (1.0 - alpha)[..., None]  # how much of the frame shows through

    def apply(self, frame: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        """Return ``frame`` with the badge (a new array unless ``inplace``); only ``self.region`` changes."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be RGB uint8 ({self.height}, {self.width}, 3), got {frame.dtype} {frame.shape}"
            )
        out = frame if inplace else frame.copy()
        x0, y0, x1, y1 = self.region
        roi = out[y0:y1, x0:x1]
        roi[...] = np.clip(roi * self._keep + self._colour + 0.5, 0, 255).astype(np.uint8)
        return out


@lru_cache(maxsize=8)
def _renderer(width: int, height: int, style: LabelStyle, text: str) -> LabelRenderer:
    return LabelRenderer(width, height, style, text)


def draw_label(frame: np.ndarray, style: LabelStyle = LabelStyle(), text: str = DEFAULT_TEXT) -> np.ndarray:
    """Return a copy of ``frame`` with the "AI face swap" badge; renderers are cached per size and style."""
    if frame.ndim != 3:
        raise ValueError(f"frame must be RGB uint8 (H, W, 3), got {frame.shape}")
    return _renderer(frame.shape[1], frame.shape[0], style, text).apply(frame)


# -----------------------------------------------------------------------------
# labelled files: the badge in the pixels, the statement in the container


def labelled_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """A synthetic still (RGB uint8) as JPEG bytes: the "AI face swap" badge drawn in, the synthetic-media XMP
    packet attached (OpenCV's encoder cannot write XMP; Pillow's can)."""
    out = io.BytesIO()
    Image.fromarray(draw_label(image)).save(out, format="JPEG", quality=quality, xmp=SYNTHETIC_XMP.encode())
    return out.getvalue()


def mark_gif_synthetic(path: Path) -> Path:
    """Add the synthetic-media statement to a GIF as a comment extension, in place (ffmpeg's GIF muxer drops all
    metadata, and re-encoding with Pillow would re-quantize the frames). The frames are not touched."""
    data = path.read_bytes()
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError(f"{path.name} is not a GIF")
    packed = data[10]  # logical screen descriptor: a global colour table of 3 * 2^(n+1) bytes follows when set
    start = 13 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0)
    text = f"{SYNTHETIC_METADATA['comment']} ({SYNTHETIC_METADATA['digital_source_type']})".encode()
    blocks = b"".join(bytes([len(text[i : i + 255])]) + text[i : i + 255] for i in range(0, len(text), 255))
    # Comments are a GIF89a feature; ffmpeg writes 89a already.
    path.write_bytes(b"GIF89a" + data[6:start] + b"\x21\xfe" + blocks + b"\x00" + data[start:])
    return path
