"""Face alignment: similarity transforms onto a canonical face, aligned crops, face masks and paste-back.

Contract (numpy + OpenCV only):
- Points are ``(N, 2)`` float ``(x, y)`` pixels; landmark sets are MediaPipe's 478 points.
- A matrix ``M`` is ``(2, 3)`` float64 in OpenCV's convention, ``dst = M @ [x, y, 1]``. ``align_matrix`` returns the
  one that maps *frame* pixels to *crop* pixels; ``invert(M)`` maps back.
- Crops are ``(size, size, 3)`` uint8 RGB; masks ``(size, size)`` float32 in ``[0, 1]``.
- ``coverage`` says how much of the head the crop holds. The canonical face (``TEMPLATE``) spans the unit square
  from the top of MediaPipe's face mesh (mid-forehead, point 10) to the chin (point 152), with the face oval's
  width centred. ``coverage=1`` maps that square onto the crop exactly; ``1.25`` (``DEFAULT_COVERAGE``) adds an
  eighth of the face height on each side (room for the forehead and for feathered mask edges); larger shows more
  hair and background. Face sets and conversion must use the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swap_engine.landmarks import FACE_OVAL, LEFT_BROW, RIGHT_BROW, Face

DEFAULT_COVERAGE = 1.25

# Landmarks the alignment fits, chosen for being rigid: eye corners, the nose from bridge to tip and its wings,
# the top of the forehead. Mouth corners and chin move with expressions (a smile, an open jaw), so they count a
# quarter: enough to steady scale and tilt, not enough to shrink the crop when the mouth opens.
TEMPLATE_INDICES = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 98, 327, 10, 109, 338, 61, 291, 152)
TEMPLATE_WEIGHTS = np.array([1.0] * 16 + [0.25] * 3)
# Where those landmarks sit on the canonical face, in the unit square described in the module docstring. Made
# once (not at run time) by generalised Procrustes analysis of MediaPipe landmarks from the shared media: the
# frontal photos (obama, biden, two_people, man_curly_glasses) and every 6th frame of five clips (the three selfies,
# tiny_man_noaudio, scene_woman_room_720p), each source weighted equally. Iterate: fit every face to the mean with
# ``umeyama`` on these points and weights, average, rescale so the face oval's box is the unit square. Then made
# left-right symmetric (pairs mirrored about the nose line, midline points set to x = 0.5) and rounded.
TEMPLATE = np.array(
    [
        (0.2474, 0.3152),  # 33 outer corner of the eye on the image's left
        (0.4011, 0.3251),  # 133 its inner corner
        (0.5989, 0.3251),  # 362 inner corner of the other eye
        (0.7526, 0.3152),  # 263 its outer corner
        (0.5000, 0.2938),  # 168 between the eyes
        (0.5000, 0.3387),  # 6 nose bridge
        (0.5000, 0.3804),  # 197
        (0.5000, 0.4185),  # 195
        (0.5000, 0.4594),  # 5
        (0.5000, 0.5090),  # 4
        (0.5000, 0.5479),  # 1 nose tip
        (0.4009, 0.5743),  # 98 nose wing
        (0.5991, 0.5743),  # 327 nose wing
        (0.5000, 0.0000),  # 10 top of the mesh, mid-forehead
        (0.3910, 0.0031),  # 109
        (0.6090, 0.0031),  # 338
        (0.3435, 0.7222),  # 61 mouth corner
        (0.6565, 0.7222),  # 291 mouth corner
        (0.5000, 1.0000),  # 152 chin
    ]
)
# Eye centres (mean of each eye's two corners) on the canonical face, for checks and for callers.
TEMPLATE_EYES = np.array([TEMPLATE[0:2].mean(axis=0), TEMPLATE[2:4].mean(axis=0)])

# How far the forehead is lifted, as a fraction of the mesh's top-to-chin height: inside the margin that
# DEFAULT_COVERAGE leaves above the face (an eighth of the height), so the mask does not touch the crop's edge.
_FOREHEAD_LIFT = 0.1
# Below this scale (crop px per frame px) a plain bilinear warp aliases: shrink the source region first.
_MIN_WARP_SCALE = 0.6


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The ``(2, 3)`` similarity (rotation, uniform scale, translation; no reflection) best mapping ``src`` onto
    ``dst`` in the (weighted) least-squares sense. ``src``, ``dst``: ``(N, 2)``, N >= 2, not all coincident."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(
            f"umeyama needs two (N, 2) arrays of the same shape, N >= 2; got {src.shape}, {dst.shape}"
        )
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    src_mean, dst_mean = w @ src, w @ dst
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float(w @ (src_c**2).sum(axis=1))
    if src_var <= 1e-12:
        raise ValueError("umeyama: the source points all coincide")
    cov = (dst_c * w[:, None]).T @ src_c
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0  # the best fit would mirror: take the best rotation instead
    rotation = u @ np.diag(d) @ vt
    scale = float(s @ d) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def template_points(size: int, coverage: float = DEFAULT_COVERAGE) -> np.ndarray:
    """``TEMPLATE`` in the pixels of a ``size`` crop at ``coverage``: ``(19, 2)`` float64."""
    return ((TEMPLATE - 0.5) / coverage + 0.5) * size


def align_matrix(points: np.ndarray, size: int, coverage: float = DEFAULT_COVERAGE) -> np.ndarray:
    """``(2, 3)`` float64 matrix mapping frame pixels to a ``size`` x ``size`` aligned crop of the face whose 478
    landmarks are ``points`` (frame pixels)."""
    if coverage <= 0:
        raise ValueError("coverage must be positive")
    chosen = np.asarray(points, np.float64)[list(TEMPLATE_INDICES)]
    return umeyama(chosen, template_points(size, coverage), TEMPLATE_WEIGHTS)


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a ``(2, 3)`` affine, as ``(2, 3)`` float64."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(N, 2)`` points; float32 in gives float32 out, otherwise float64."""
    points = np.asarray(points)
    out = (
        points.astype(np.float64) @ np.asarray(matrix, np.float64)[:, :2].T
        + np.asarray(matrix, np.float64)[:, 2]
    )
    return out.astype(np.float32) if points.dtype == np.float32 else out


def matrix_scale(matrix: np.ndarray) -> float:
    """How many destination pixels one source pixel becomes under a similarity ``matrix``."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` crop that ``matrix`` (frame → crop) cuts from ``image``.

    Outside the frame the edge pixels are repeated. When the crop shrinks the face a lot (big photos), the
    region is first shrunk with area averaging, so fine detail does not alias into jaggies.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = matrix_scale(matrix)
    if scale < _MIN_WARP_SCALE:
        x0, y0, x1, y1 = _footprint(invert(matrix), (0, 0, size, size), image.shape)
        if x1 > x0 and y1 > y0:
            factor = scale / 0.8  # leaves a final warp at 0.8x: mild oversampling, no aliasing
            region = image[y0:y1, x0:x1]
            width = max(1, round((x1 - x0) * factor))
            height = max(1, round((y1 - y0) * factor))
            small = cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)
            # frame → small region: shift by the region's corner, scale by what resize really did, with pixel
            # centres kept aligned as resize aligns them ((x + 0.5) * f - 0.5).
            fx, fy = width / (x1 - x0), height / (y1 - y0)
            to_small = np.array([[fx, 0, 0.5 * (fx - 1) - fx * x0], [0, fy, 0.5 * (fy - 1) - fy * y0]])
            matrix = _compose(matrix, invert(to_small))
            image = small
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def rescale_crops(crops: np.ndarray, side: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Crops ``(N, S, S[, C])`` of one alignment brought to ``side`` px the way such crops relate: crop pixel
    coordinates scale with the side (``align_matrix(points, side)`` is the S px matrix times ``side / S``), so what
    is drawn on the S px crop stays registered with the ``side`` px crop of the same frame (a centre-aligned resize
    would shift it by half a pixel of the difference)."""
    if crops.shape[1] == side:
        return crops
    f = side / crops.shape[1]
    m = np.array([[f, 0.0, 0.0], [0.0, f, 0.0]])
    return np.stack(
        [cv2.warpAffine(c, m, (side, side), flags=interpolation, borderMode=cv2.BORDER_REPLICATE) for c in crops]
    )


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer ∘ inner`` (apply ``inner`` first)."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return np.asarray((a @ b)[:2])


def _footprint(
    matrix: np.ndarray, box: tuple[float, float, float, float], shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """Integer box ``(x0, y0, x1, y1)`` in an image of ``shape`` covering ``box`` mapped by ``matrix``, clipped."""
    bx0, by0, bx1, by1 = box
    corners = transform_points(np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]], np.float64), matrix)
    height, width = shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 1, 0, width))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 1, 0, height))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 2, 0, width))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 2, 0, height))
    return x0, y0, x1, y1


def face_mask(
    points_in_crop: np.ndarray, size: int, *, forehead: bool = True, feather_px: float | None = None
) -> np.ndarray:
    """``(size, size)`` float32 mask in ``[0, 1]`` of the face in a crop: the hull of the face oval and brows.

    ``forehead=True`` raises the top of the hull over the forehead (MediaPipe's mesh stops mid-forehead) by a
    tenth of the mesh's top-to-chin height (about to the hairline), fading to none at eye level. ``feather_px``
    softens the edge *inward* (the mask is 0 on and outside the hull, 1 from about ``2 * feather_px`` inside it);
    None means 2 % of ``size``, 0 a hard (anti-aliased) edge.
    """
    points = np.asarray(points_in_crop, np.float64)
    outline = points[list(FACE_OVAL) + list(LEFT_BROW) + list(RIGHT_BROW)]
    if forehead:
        outline = np.vstack([outline, _forehead_points(points)])
    hull = cv2.convexHull(np.round(outline * 16).astype(np.int32))
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_AA, shift=4)
    mask: np.ndarray = canvas.astype(np.float32) / 255.0
    return feather_inward(mask, size * 0.02 if feather_px is None else float(feather_px))


def feather_inward(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """``mask`` ``(S, S)`` float32 softened *inward* over about ``2 * feather_px``: eroded by ``feather_px``, then
    blurred with sigma ``feather_px / 2``, so it stays 0 on and outside the original edge. 0 leaves it as it is."""
    if feather_px > 0:
        radius = max(1, round(feather_px))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather_px / 2)
    return np.asarray(np.clip(mask, 0.0, 1.0))


def _forehead_points(points: np.ndarray) -> np.ndarray:
    """The upper half of the face oval lifted along the face's up axis, most at the top, none at eye level."""
    chin, top = points[152], points[10]
    up = top - chin
    height = float(np.linalg.norm(up))
    if height < 1e-6:
        return points[list(FACE_OVAL)]
    up /= height
    eye_level = float((points[[33, 263]].mean(axis=0) - chin) @ up)
    oval = points[list(FACE_OVAL)]
    level = (oval - chin) @ up  # height of each oval point above the chin
    weight = np.clip((level - eye_level) / max(height - eye_level, 1e-6), 0.0, 1.0)
    return np.asarray(oval + (_FOREHEAD_LIFT * height * weight)[:, None] * up)


def paste_back(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with ``crop`` (cut by ``matrix``, frame → crop) warped back and alpha-blended by ``mask``.

    Only the frame region under the mask's footprint is warped and blended, so the cost follows the face's size.
    """
    out = frame.copy()
    rows = np.flatnonzero(mask.max(axis=1) > 0)
    cols = np.flatnonzero(mask.max(axis=0) > 0)
    if rows.size == 0:
        return out
    inverse = invert(matrix)
    x0, y0, x1, y1 = _footprint(inverse, (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1), frame.shape)
    if x1 <= x0 or y1 <= y0:
        return out
    # Crop → region pixels: the inverse, shifted so the region's corner is the origin.
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    region_size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(crop, shifted, region_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(
        mask.astype(np.float32), shifted, region_size, flags=cv2.INTER_LINEAR, borderValue=0
    )
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region + alpha * (face.astype(np.float32) - region)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face cut out upright: ``crop`` ``(S, S, 3)`` uint8, ``matrix`` ``(2, 3)`` float64 frame → crop, ``points``
    ``(478, 2)`` float32 landmarks in crop pixels."""

    crop: np.ndarray
    matrix: np.ndarray
    points: np.ndarray

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel; above 1 the crop was enlarged from fewer source pixels (softer)."""
        return matrix_scale(self.matrix)


def align_face(
    image: np.ndarray, face: Face | np.ndarray, size: int = 256, coverage: float = DEFAULT_COVERAGE
) -> AlignedFace:
    """Cut the aligned ``size`` crop of ``face`` (a ``Face`` or its ``(478, 2)`` points) out of ``image``."""
    points = face.points if isinstance(face, Face) else np.asarray(face, np.float32)
    matrix = align_matrix(points, size, coverage)
    crop = warp_crop(image, matrix, size)
    return AlignedFace(crop, matrix, transform_points(points.astype(np.float32), matrix))
