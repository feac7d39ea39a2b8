#!/usr/bin/env bash
# Fill the git-ignored .gpu/ and .whl/ with what benchmarks/gpu_check.sh needs on a GPU machine that gets the repo only.
#
#   benchmarks/gpu_prepare.sh [--kit mediapipe|ffmpeg] [--shared DIR] [--python PY]
#
# The device machine (see /work/.library/device/README.md) has Python 3.12, torch with CUDA, numpy, OpenCV and
# pillow, and no mediapipe, ffmpeg, cryptography or network; it receives the working tree plus the paths named in
# `carry`, at most 64 MiB in all. The mediapipe wheel (43 MB) and an ffmpeg with libx264 (imageio-ffmpeg's static
# binary: 53 MB even xz-compressed) do not fit together, hence two kits, one per device call:
#
#   mediapipe (default)  .whl/  mediapipe, cryptography, cffi, pycparser, aiosqlite, platformdirs, absl-py,
#                               flatbuffers (the swap imports storage, hence aiosqlite; no discord.py): cp312
#                               manylinux wheels of the versions this venv runs (pip download, --no-deps);
#                        .gpu/models/  face_landmarker.task, hair_segmenter.tflite
#                        .gpu/media/   scene_woman_room_720p.mp4 (the clip), selfie_man.mp4 (the identity)
#                        Every part runs where the machine has an ffmpeg of its own; without one the convert and
#                        swap parts print why they were skipped.
#   ffmpeg               .gpu/bin/ffmpeg.xz (this venv's imageio-ffmpeg binary), .gpu/models/, .gpu/media/ and
#                        .gpu/media/scene.scan.npz (the clip scanned here); no wheels. bench_convert then runs without
#                        mediapipe (--scan, --no-hair); the full swap is skipped. Compressing takes a few minutes.
#
# Then, from the session:  run(command="benchmarks/gpu_check.sh", carry=[".gpu", ".whl"], timeout_s=540)
# The script refuses to leave more than 64 MiB (tracked files + .gpu + .whl) to carry.
set -euo pipefail
cd "$(dirname "$0")/.."

kit=mediapipe
shared=../shared
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --kit) kit=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_prepare: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$kit" in mediapipe|ffmpeg) ;; *) echo "gpu_prepare: --kit is mediapipe or ffmpeg, not $kit" >&2; exit 2 ;; esac

rm -rf .gpu .whl
mkdir -p .gpu/models .gpu/media
cp "$shared/models/face_landmarker.task" "$shared/models/hair_segmenter.tflite" .gpu/models/
cp "$shared/media/clips/scene_woman_room_720p.mp4" "$shared/media/clips/selfie_man.mp4" .gpu/media/

if [ "$kit" = mediapipe ]; then
  mkdir -p .whl
  # The versions this venv runs, so the device runs what the tests here ran.
  pins=$("$py" - <<'EOF'
from importlib.metadata import version
names = ["mediapipe", "cryptography", "cffi", "pycparser", "aiosqlite", "platformdirs", "absl-py", "flatbuffers"]
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)
  echo "gpu_prepare: downloading cp312 wheels: $pins"
  # shellcheck disable=SC2086
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
    -d .whl $pins
else
  mkdir -p .gpu/bin
  ffmpeg=$("$py" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')
  echo "gpu_prepare: compressing $ffmpeg (a few minutes)"
  nice -n 10 xz -6 -T2 -c "$ffmpeg" > .gpu/bin/ffmpeg.xz
  echo "gpu_prepare: scanning the clip here (the device has no mediapipe in this kit)"
  FAMSWAP_MODEL_DIR=.gpu/models PYTHONPATH=. "$py" - <<'EOF'
from pathlib import Path
from swap_engine import pipeline
scan = pipeline.scan_video(Path(".gpu/media/scene_woman_room_720p.mp4"), Path(".gpu/models/face_landmarker.task"))
pipeline.save_scan(scan, Path(".gpu/media/scene.scan.npz"))
EOF
fi

tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .gpu $([ -d .whl ] && echo .whl) | tail -1 | cut -f1)
total=$((tracked + carried))
limit=$((64 * 1024 * 1024))
awk -v k="$kit" -v c="$carried" -v t="$tracked" 'BEGIN { m = 1048576;
  printf "gpu_prepare: kit %s, %.1f MiB to carry (.gpu + .whl) + %.1f MiB tracked = %.1f of 64 MiB\n", k, c/m, t/m, (c+t)/m }'
if [ "$total" -gt "$limit" ]; then
  echo "gpu_prepare: over the 64 MiB the device call carries; remove something from .gpu/ or .whl/" >&2
  exit 1
fi
echo 'gpu_prepare: now run(command="benchmarks/gpu_check.sh", carry=[".gpu", ".whl"], timeout_s=540)'
