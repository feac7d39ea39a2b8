"""The judge's sharpness of a perfect face drawn at N px: what no decoder of that size can beat.

For every 15th frame of each clip: the frame brought down so its face spans what an N px model crop holds of it
(``coverage`` 1.25, the judge's box ~0.9 of the crop's face square), back up with bicubic, and scored with the judge's
own ``inner_sharpness`` against the original (1.0 = as crisp). ``64+usm`` adds an unsharp mask like famswap's
(amount 1, radius 0.8 model px). Medians per clip. Run with the judge's environment:

    /tmp/judge/bin/python benchmarks/sharpness_ceiling.py ../shared/media/clips/selfie_man.mp4 \\
        ../shared/media/clips/scene_woman_room_720p.mp4
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "tools"))
import judge  # noqa: E402


def ceiling(path: str, sizes: tuple[int, ...] = (64, 96, 128), every: int = 15) -> dict[str, float]:
    """Median sharpness ratio per model size (and ``64+usm``) over every ``every``-th frame with a face."""
    cap = cv2.VideoCapture(path)
    ratios: dict[str, list[float]] = {str(n): [] for n in sizes} | {"64+usm": []}
    index = -1
    while True:
        ok, img = cap.read()
        if not ok:
            break
        index += 1
        if index % every:
            continue
        face = judge.largest_face(img)
        if face is None:
            continue
        width = face[2][2] - face[2][0]
        base = judge.inner_sharpness(img, face[1])
        for n in sizes:
            k = width / (n / 1.25 * 0.9)  # frame px per model px
            small = cv2.resize(img, None, fx=1 / k, fy=1 / k, interpolation=cv2.INTER_AREA)
            up = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC)
            ratios[str(n)].append(judge.inner_sharpness(up, face[1]) / base)
            if n == 64:
                usm = cv2.addWeighted(up, 2.0, cv2.GaussianBlur(up, (0, 0), k * 0.8), -1.0, 0)
                ratios["64+usm"].append(judge.inner_sharpness(usm, face[1]) / base)
    return {name: round(float(np.median(v)), 3) for name, v in ratios.items() if v}


if __name__ == "__main__":
    for clip in sys.argv[1:]:
        print(Path(clip).name, ceiling(clip))
