"""A sheet to look at a swap with: original | swapped, whole frame and face zoomed, on chosen frames.

    .venv/bin/python benchmarks/quality_sheet.py ORIGINAL.mp4 SWAPPED.mp4 --out sheet.png [--frames 6] [--zoom 320]

Rows are frames spread evenly over the clip, plus the most turned one (largest |yaw| or |pitch|) and the most
expressive one (blendshapes furthest from the clip's median face), each labelled with its frame number, why it was
chosen and its pose. Columns: the original frame, the swapped frame (both scaled to the zoom height), then the face
of each, cut from the same box (the original's landmarks, grown by half) and enlarged with nearest-neighbour
sampling so single pixels stay visible. Faces are found with famswap's own landmarker (FAMSWAP_MODEL_DIR, default
../shared/models). Write the sheet outside the repository: large images are not committed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swap_engine import video  # noqa: E402
from swap_engine.landmarks import Face, LandmarkDetector  # noqa: E402


def scan(path: Path, model: Path) -> dict[int, Face]:
    """The largest face of every frame of ``path`` (VIDEO mode), by frame index."""
    faces: dict[int, Face] = {}
    info = video.probe(path)
    fps = float(info.fps) or 30.0
    with LandmarkDetector(model, max_faces=1, video=True) as detector:
        for index, frame in enumerate(video.read_frames(path)):
            found = detector.detect(frame, round(index * 1000 / fps))
            if found:
                faces[index] = found[0]
    return faces


def choose(faces: dict[int, Face], total: int, spread: int) -> list[tuple[int, str]]:
    """``(frame, why)`` rows: ``spread`` evenly spaced frames with a face, the most turned, the most expressive."""
    if not faces:
        return [(int(i), "spread") for i in np.linspace(0, total - 1, spread).round()]
    indices = sorted(faces)
    rows = [(indices[int(k)], "spread") for k in np.linspace(0, len(indices) - 1, spread).round()]
    turn = {i: max(abs(np.nan_to_num(f.yaw)), abs(np.nan_to_num(f.pitch))) for i, f in faces.items()}
    rows.append((max(turn, key=turn.get), "most turned"))  # type: ignore[arg-type]
    shaped = {i: f.blendshapes for i, f in faces.items() if f.blendshapes is not None}
    if shaped:
        median = np.median(np.stack(list(shaped.values())), axis=0)
        spread_of = {i: float(np.abs(b - median).sum()) for i, b in shaped.items()}
        rows.append((max(spread_of, key=spread_of.get), "most expressive"))  # type: ignore[arg-type]
    merged: dict[int, list[str]] = {}
    for index, why in rows:
        merged.setdefault(index, []).append(why)
    return [(index, ", ".join(whys)) for index, whys in sorted(merged.items())]


def face_box(face: Face, shape: tuple[int, ...], grow: float = 0.5) -> tuple[int, int, int, int]:
    """A square box around the face's landmarks, grown by ``grow`` of its side, clipped to the frame."""
    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0) * (1 + grow)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = shape[:2]
    bx0, by0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    bx1, by1 = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    return bx0, by0, bx1, by1


def tile(image: np.ndarray, height: int, nearest: bool = False) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    for n, line in enumerate(text.split("\n")):
        at = (6, 18 + 18 * n)
        cv2.putText(out, line, at, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, line, at, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def sheet(original: Path, swapped: Path, model: Path, frames: int, zoom: int) -> np.ndarray:
    faces = scan(original, model)
    total = video.probe(original).frame_count
    rows = choose(faces, total, frames)
    wanted = {i for i, _ in rows}
    before = {i: f for i, f in enumerate(video.read_frames(original)) if i in wanted}
    after = {i: f for i, f in enumerate(video.read_frames(swapped)) if i in wanted}
    lines = []
    for index, why in rows:
        if index not in before or index not in after:
            continue
        a, b = before[index], after[index]
        cells = [tile(a, zoom), tile(b, zoom)]
        face = faces.get(index)
        if face is not None:
            x0, y0, x1, y1 = face_box(face, a.shape)
            cells += [tile(a[y0:y1, x0:x1], zoom, nearest=True), tile(b[y0:y1, x0:x1], zoom, nearest=True)]
            pose = f"yaw {face.yaw:.0f} pitch {face.pitch:.0f}"
        else:
            pose = "no face"
        cells[0] = caption(cells[0], f"#{index} {why}\n{pose}")
        gap = np.full((zoom, 4, 3), 255, np.uint8)
        lines.append(np.hstack([c for cell in cells for c in (cell, gap)][:-1]))
    width = max(line.shape[1] for line in lines)
    padded = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.vstack(padded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("original", type=Path)
    parser.add_argument("swapped", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG or JPEG to write")
    parser.add_argument("--frames", type=int, default=4, help="evenly spread frames (plus turned + expressive)")
    parser.add_argument("--zoom", type=int, default=256, help="row height in pixels")
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("FAMSWAP_MODEL_DIR", Path(__file__).resolve().parents[2]
                                                    / "shared" / "models")))  # fmt: skip
    args = parser.parse_args(argv)
    image = sheet(args.original, args.swapped, args.model_dir / "face_landmarker.task", args.frames, args.zoom)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        print(f"could not write {args.out}", file=sys.stderr)
        return 1
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]}, rows: frames chosen from {args.original.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
