"""Masks and blending for conversion: erode/feather, mask intersection, alpha and Poisson blends, paste-back.

Contract: images are RGB ``uint8`` ``(H, W, 3)``; masks are ``float32`` ``(H, W)`` in ``[0, 1]``; ``matrix`` is the
``(2, 3)`` float64 affine that maps *frame* pixels to *crop* pixels (what ``align.align_matrix`` returns). Every
function returns a new array and leaves its inputs alone (except ``composite(..., inplace=True)``).

The guarantee the tests hold ``composite`` to: a frame pixel whose warped mask value is exactly 0 keeps its exact
input value, in both modes. Only the bounding box of the mask in the frame is warped and blended, so the cost
follows the face's size, not the frame's.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

BlendMode = Literal["alpha", "poisson"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

# Poisson blending needs a ring of frame pixels around the mask for its boundary condition.
_POISSON_MARGIN = 4
# Above this window side the Poisson correction is solved at reduced resolution (see _seamless).
_POISSON_MAX_SIDE = 256


def margins_for(face_px: float, *, erode: float = 0.04, feather: float = 0.06) -> tuple[int, int]:
    """Erosion and feather radii in pixels for a face ``face_px`` wide, from fractions of the face size.

    Defaults: erode 4 % (pulls the edge inside the jaw/hairline so background from the generated crop never
    shows), feather 6 % (a soft transition wide enough to hide a colour step, narrow enough to keep the cheeks).
    """
    return max(0, round(face_px * erode)), max(0, round(face_px * feather))


def erode_feather(mask: np.ndarray, erode_px: int, feather_px: int) -> np.ndarray:
    """Shrink ``mask`` by ``erode_px`` and soften its edge over about ``feather_px`` pixels; float32 ``[0, 1]``.

    The image border counts as outside: a mask touching the crop edge is eroded from it, so the pasted face
    never ends in the straight edge of the crop. The feather is a Gaussian with sigma ``feather_px / 2``
    (the edge goes from ~2 % to ~98 % over ``2 * feather_px``); it spreads about ``feather_px`` outward from the
    eroded edge, so choose ``erode_px >= feather_px`` to keep the soft edge inside the original mask.
    """
    if erode_px < 0 or feather_px < 0:
        raise ValueError(f"erode_px and feather_px must be >= 0, got {erode_px}, {feather_px}")
    out: np.ndarray = np.asarray(mask, np.float32)
    if erode_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        out = cv2.erode(out, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        out = out.copy()
    if feather_px > 0:
        sigma = feather_px / 2
        k = 2 * int(np.ceil(2 * sigma)) + 1  # +-2 sigma: the tails beyond add nothing visible
        out = cv2.GaussianBlur(out, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(out, 0.0, 1.0, out=out)


def combine_masks(hull_mask: np.ndarray, learned_mask: np.ndarray | None) -> np.ndarray:
    """Intersection (pixel-wise minimum) of the landmark-hull mask and the model's learned mask, float32.

    The learned mask knows about hair and hands over the face; the hull keeps it from spilling past the jaw.
    A learned mask of another size (the decoder's output size) is resized to the hull's.
    """
    hull = np.asarray(hull_mask, np.float32)
    if learned_mask is None:
        return hull.copy()
    learned: np.ndarray = np.asarray(learned_mask, np.float32)
    if learned.shape != hull.shape:
        learned = cv2.resize(learned, (hull.shape[1], hull.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.asarray(np.clip(np.minimum(hull, learned), 0.0, 1.0))


def alpha_blend(dst_region: np.ndarray, src_region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``dst * (1 - mask) + src * mask`` rounded to uint8; where ``mask == 0`` the result equals ``dst`` exactly."""
    if dst_region.shape != src_region.shape or mask.shape != dst_region.shape[:2]:
        raise ValueError(f"shapes differ: dst {dst_region.shape}, src {src_region.shape}, mask {mask.shape}")
    m = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    # OpenCV's per-pixel weighted sum (rounded, saturated, SIMD): several times faster than float numpy here.
    # Weights 1 and 0 give back dst exactly (tested), which the "outside the mask is untouched" promise needs.
    return cv2.blendLinear(np.ascontiguousarray(dst_region), np.ascontiguousarray(src_region), 1.0 - m, m)


def _mask_box(mask: np.ndarray) -> Box | None:
    """Tight bounding box of the nonzero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def poisson_blend(
    frame: np.ndarray, warped_face: np.ndarray, mask: np.ndarray, center: tuple[int, int]
) -> np.ndarray:
    """Poisson (``cv2.seamlessClone``, normal clone) of a face patch into ``frame``; returns a new frame.

    ``warped_face`` ``(h, w, 3)`` and ``mask`` ``(h, w)`` are a patch already in frame geometry; ``center`` is the
    frame pixel where the patch's centre ``(w // 2, h // 2)`` lands. Patches partly (or wholly) outside the frame are
    fine: the frame is extended by edge replication for the solve and only the in-frame part is written.

    The clone takes the face's gradients and the frame's colours at the mask edge; the result is then blended
    with the soft ``mask`` as alpha, so the feathered edge still fades out and a pixel with ``mask == 0`` is
    exactly the input. If OpenCV refuses (mask too thin, degenerate patch), the patch is alpha-blended instead.
    Windows wider than 256 px solve the (smooth) Poisson correction at 256 px and upsample it.
    """
    if warped_face.shape[:2] != mask.shape or warped_face.ndim != 3:
        raise ValueError(f"patch {warped_face.shape} and mask {mask.shape} differ")
    out = frame.copy()
    ph, pw = mask.shape
    fh, fw = frame.shape[:2]
    px0, py0 = int(center[0]) - pw // 2, int(center[1]) - ph // 2
    # Part of the patch that falls inside the frame, in frame and in patch coordinates.
    fx0, fy0, fx1, fy1 = max(px0, 0), max(py0, 0), min(px0 + pw, fw), min(py0 + ph, fh)
    if fx0 >= fx1 or fy0 >= fy1:
        return out
    m = np.asarray(mask, np.float32)
    inner = m[fy0 - py0 : fy1 - py0, fx0 - px0 : fx1 - px0]
    box = _mask_box(inner > 0)
    if box is None:
        return out
    bx0, by0, bx1, by1 = box  # the part of the mask that matters, in the in-frame patch coordinates
    # Solve on a small window: the mask box plus a margin, in frame coordinates (may stick out of the frame).
    g = _POISSON_MARGIN
    wx0, wy0, wx1, wy1 = fx0 + bx0 - g, fy0 + by0 - g, fx0 + bx1 + g, fy0 + by1 + g
    window = _crop_extended(frame, (wx0, wy0, wx1, wy1))
    face = _crop_extended(warped_face, (wx0 - px0, wy0 - py0, wx1 - px0, wy1 - py0))
    soft = np.zeros((wy1 - wy0, wx1 - wx0), np.float32)
    soft[g:-g, g:-g] = inner[by0:by1, bx0:bx1]
    cloned = _seamless(face, window, soft > 0)
    blended = alpha_blend(window, np.ascontiguousarray(cloned), soft)
    # Write back the in-frame part of the window.
    ix0, iy0, ix1, iy1 = max(wx0, 0), max(wy0, 0), min(wx1, fw), min(wy1, fh)
    out[iy0:iy1, ix0:ix1] = blended[iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0]
    return out


def _clone(face: np.ndarray, window: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``cv2.seamlessClone`` of ``face`` into ``window`` (same size) over the boolean ``inside``."""
    binary = inside.astype(np.uint8) * 255
    # OpenCV clears the mask's outer ring itself; do it here so the bounding box below is the one it uses.
    binary[[0, -1], :] = 0
    binary[:, [0, -1]] = 0
    x, y, w, h = cv2.boundingRect(binary)
    if w < 3 or h < 3:
        raise cv2.error("mask too small for seamlessClone")
    # seamlessClone centres the mask's bounding box on p: this p keeps face and window aligned.
    # Its solver is not symmetric in the channels, so hand it the BGR order it is written for.
    cloned = cv2.seamlessClone(
        np.ascontiguousarray(face[..., ::-1]),
        np.ascontiguousarray(window[..., ::-1]),
        binary,
        (x + w // 2, y + h // 2),
        cv2.NORMAL_CLONE,
    )
    return np.ascontiguousarray(cloned[..., ::-1])


def _seamless(face: np.ndarray, window: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Poisson clone of ``face`` into ``window`` over ``inside``; ``face`` itself if OpenCV refuses.

    The clone equals ``face`` plus a harmonic (smooth) membrane that pulls its edge onto the frame's colours,
    so for big windows the membrane is solved at most ``_POISSON_MAX_SIDE`` px wide and upsampled: the cost of
    a 1080p close-up drops about tenfold and the face keeps its full-resolution detail.
    """
    h, w = inside.shape
    scale = _POISSON_MAX_SIDE / max(h, w)
    try:
        if scale >= 1.0:
            return _clone(face, window, inside)
        size = (max(round(w * scale), 8), max(round(h * scale), 8))
        face_s = cv2.resize(face, size, interpolation=cv2.INTER_AREA)
        window_s = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
        inside_s = cv2.resize(inside.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        membrane: np.ndarray = _clone(face_s, window_s, inside_s).astype(np.float32) - face_s.astype(np.float32)
    except cv2.error:
        return face
    membrane = np.asarray(cv2.resize(membrane, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    membrane += face
    np.maximum(membrane, 0, out=membrane)
    membrane += np.float32(0.5)
    np.minimum(membrane, 255, out=membrane)
    return membrane.astype(np.uint8)


def _crop_extended(image: np.ndarray, box: Box) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` where the box may leave the image: missing pixels repeat the nearest edge."""
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:  # wholly outside: nothing to replicate from, use black
        return np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    part = image[cy0:cy1, cx0:cx1]
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return part.copy()
    return cv2.copyMakeBorder(part, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_REPLICATE)


def frame_box(matrix: np.ndarray, crop_box: Box, frame_size: tuple[int, int], pad: int = 2) -> Box | None:
    """Frame-pixel box covering the crop-space box ``crop_box`` under the inverse of ``matrix``, clipped to the
    frame ``(width, height)``; None if it lies wholly outside."""
    inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    x0, y0, x1, y1 = crop_box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ inv.T
    w, h = frame_size
    fx0 = max(int(np.floor(corners[:, 0].min())) - pad, 0)
    fy0 = max(int(np.floor(corners[:, 1].min())) - pad, 0)
    fx1 = min(int(np.ceil(corners[:, 0].max())) + pad + 1, w)
    fy1 = min(int(np.ceil(corners[:, 1].max())) + pad + 1, h)
    return None if fx0 >= fx1 or fy0 >= fy1 else (fx0, fy0, fx1, fy1)


def composite(
    frame: np.ndarray,
    face_crop: np.ndarray,
    matrix: np.ndarray,
    mask: np.ndarray,
    *,
    mode: BlendMode = "alpha",
    interpolation: int = cv2.INTER_CUBIC,
    inplace: bool = False,
) -> np.ndarray:
    """Paste ``face_crop`` (crop space) back into ``frame`` through the inverse of ``matrix``; returns a new frame
    (``inplace=True``: ``frame`` itself, written in place in alpha mode; this saves a whole-frame copy per frame).

    ``matrix`` maps frame pixels to crop pixels; ``mask`` ``(S, S)`` float32 is in crop space (already eroded and
    feathered). Only the frame box covering the mask is warped (``WARP_INVERSE_MAP`` samples the crop directly
    with ``matrix``, no inversion error). ``mode="alpha"`` (default) blends with the mask as alpha;
    ``"poisson"`` runs ``poisson_blend`` on that box. Frame pixels where the warped mask is 0 are bit-for-bit the
    input's. Bicubic sampling keeps the (usually upscaled) face crisp; pass ``cv2.INTER_LINEAR`` for speed.
    """
    if mode not in ("alpha", "poisson"):
        raise ValueError(f"unknown blend mode {mode!r}; use 'alpha' or 'poisson'")
    if face_crop.shape[:2] != mask.shape:
        raise ValueError(f"face crop {face_crop.shape} and mask {mask.shape} differ")
    crop_box = _mask_box(np.asarray(mask) > 0)
    fh, fw = frame.shape[:2]
    box = None if crop_box is None else frame_box(matrix, crop_box, (fw, fh))
    if box is None:
        return frame if inplace else frame.copy()
    x0, y0, x1, y1 = box
    # Shift the frame->crop map so that it starts at the box's corner: crop = M @ (p + (x0, y0)).
    m = np.asarray(matrix, np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    size = (x1 - x0, y1 - y0)
    flags = cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(face_crop, m, size, flags=flags | interpolation, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(
        np.asarray(mask, np.float32), m, size, flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    np.clip(alpha, 0.0, 1.0, out=alpha)
    if mode == "poisson":
        # Reuse poisson_blend on the box: it handles windows that reach the frame border.
        center = (x0 + size[0] // 2, y0 + size[1] // 2)
        blended = poisson_blend(frame, face, alpha, center)
        if inplace:
            frame[...] = blended
            return frame
        return blended
    out = frame if inplace else frame.copy()
    out[y0:y1, x0:x1] = alpha_blend(frame[y0:y1, x0:x1], face, alpha)
    return out
