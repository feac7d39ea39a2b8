#!/usr/bin/env bash
# Swap quality in numbers: run `famswap swap` exactly as issue 5 states it, then score each result with the
# independent judge (../shared/tools/judge.py, dlib). Reproduces the table in docs/QUALITY.md.
#
#   benchmarks/quality_swap.sh [MINUTES ...]          default: 2 10   (e.g. `benchmarks/quality_swap.sh 2 10 30`)
#   benchmarks/quality_swap.sh default                the CPU default budget (no --train-minutes)
#   benchmarks/quality_swap.sh steps1250              exactly 1250 training steps (--train-steps): load-proof A/B
#   SEED=1 ...                                        another training seed (the spread between runs)
#   CLIP=../shared/media/clips/selfie_man.mp4 ENROLL=../shared/media/clips/selfie_woman_short.mp4 \
#     TAG=woman-on-man benchmarks/quality_swap.sh default      another pair (CLIP = the actor's clip)
#
# Environment: OUT (results folder, default /tmp/famswap-quality), JUDGE_PY (default /tmp/judge/bin/python; set it
# up once with `python3 -m venv /tmp/judge && /tmp/judge/bin/pip install dlib-bin face-recognition-models
# opencv-python-headless numpy`), FAMSWAP_MODEL_DIR (default ../shared/models).
#
# Every run gets a fresh FAMSWAP_HOME, so nothing (face set, scan, bank) carries over from an earlier run: the
# M-minute row is M minutes of training from scratch. `--train-minutes` is wall clock, so a busy CPU trains fewer
# steps: the step count the CLI printed is in the table. Each run's CLI log is kept as $OUT/swap-M.log and its
# data home as $OUT/home-M (the trained bank is there, encrypted with $OUT/home-M/key, as the CLI leaves it).
#
# The judge calls `ffprobe` for its audio check. famswap runs on the bundled ffmpeg (no ffprobe), so a tiny shim
# named ffprobe, answering only the judge's question through famswap's own probe, is put on PATH for the judge
# call alone (famswap itself must not see it: it would take it for a system ffprobe).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-/tmp/famswap-quality}"
JUDGE_PY="${JUDGE_PY:-/tmp/judge/bin/python}"
export FAMSWAP_MODEL_DIR="${FAMSWAP_MODEL_DIR:-$REPO/../shared/models}"
CLIP="${CLIP:-../shared/media/clips/selfie_woman_short.mp4}"
ENROLL="${ENROLL:-../shared/media/clips/selfie_man.mp4}"
TAG="${TAG:-}"
MINUTES=("$@")
[ ${#MINUTES[@]} -gt 0 ] || MINUTES=(2 10)

if ! "$JUDGE_PY" -c "import dlib, face_recognition_models" 2>/dev/null; then
    echo "the judge's environment is missing: python3 -m venv /tmp/judge && /tmp/judge/bin/pip install" \
         "dlib-bin face-recognition-models opencv-python-headless numpy" >&2
    exit 2
fi
mkdir -p "$OUT/shim"
cat > "$OUT/shim/ffprobe" <<EOF
#!/usr/bin/env bash
# Shim for judge.py only: prints the first audio stream's codec name (or nothing), via famswap's probe.
# It answers "ffprobe ... -select_streams a ... FILE" and nothing else.
case " \$* " in *" -select_streams a "*) ;; *) echo "ffprobe shim: only '-select_streams a' is supported" >&2; exit 1;; esac
file="\${@: -1}"
exec "$REPO/.venv/bin/python" -c '
import sys
from swap_engine.video import probe
info = probe(sys.argv[1])
if info.has_audio:
    print(info.audio_codec or "audio")
' "\$file"
EOF
chmod +x "$OUT/shim/ffprobe"

ROWS="$OUT/rows${TAG:+-$TAG}${SEED:+-seed$SEED}.md"
: > "$ROWS"
for M in "${MINUTES[@]}"; do
    budget=(--train-minutes "$M")
    [ "$M" != default ] || budget=()
    case "$M" in steps*) budget=(--train-steps "${M#steps}");; esac
    [ -z "${SEED:-}" ] || budget+=(--seed "$SEED")
    M="$M${TAG:+-$TAG}${SEED:+-seed$SEED}"
    home="$OUT/home-$M"
    rm -rf "$home" && mkdir -p "$home"
    echo "== famswap swap, $M training minutes" >&2
    start=$(date +%s)
    FAMSWAP_HOME="$home" FAMSWAP_KEY_FILE="$home/key" "$REPO/.venv/bin/famswap" swap "$CLIP" \
        --identity-from "$ENROLL" "${budget[@]}" --out "$OUT/swap-$M.mp4" 2>&1 \
        | tr '\r' '\n' | grep -v -e '^W0000' -e '^INFO: ' -e '^WARNING: Logging' > "$OUT/swap-$M.log"
    wall=$(( $(date +%s) - start ))
    grep -E '^(train|done) ' "$OUT/swap-$M.log" | grep -v '\[' >&2 || true
    steps=$(sed -n 's/^train *\([0-9]*\) steps.*/\1/p' "$OUT/swap-$M.log" | tail -1)
    echo "== judge" >&2
    PATH="$OUT/shim:$PATH" "$JUDGE_PY" ../shared/tools/judge.py --enrolled "$ENROLL" --original "$CLIP" \
        --swapped "$OUT/swap-$M.mp4" --gallery ../shared/media/clips ../shared/media/photos --json \
        > "$OUT/judge-$M.json"
    cat "$OUT/judge-$M.json" >&2
    "$REPO/.venv/bin/python" - "$OUT/judge-$M.json" "$M" "${steps:-?}" "$wall" >> "$ROWS" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
keys = ("id_retrieval", "gallery_top1", "id_dist", "src_dist", "face_rate", "pose_err", "expr_err", "flicker",
        "sharpness", "det_delta")
audio = "yes" if j["audio_swapped"] == j["audio_original"] else "LOST"
cells = [sys.argv[2], sys.argv[3]] + [str(j[k]) for k in keys] + [f'{j["frames_swapped"]}/{j["frames_original"]}', audio, sys.argv[4]]
print("| " + " | ".join(cells) + " |")
EOF
done

echo
echo "| minutes | steps | id_retrieval | gallery_top1 | id_dist | src_dist | face_rate | pose_err | expr_err | flicker | sharpness | det_delta | frames | audio | wall s |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |"
cat "$ROWS"
