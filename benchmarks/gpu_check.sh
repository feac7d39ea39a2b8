#!/usr/bin/env bash
# The GPU path measured in one go: bench_model (original and hires, bf16, MFU), bench_convert (hires) and a full
# `famswap swap` with the hires model, then one table (benchmarks/gpu_table.py).
#
#   benchmarks/gpu_check.sh [--cpu-dry-run] [--out DIR] [--skip PART[,PART…]] [--train-minutes M]
#
# On a lent GPU machine: fill .gpu/ and .whl/ here with benchmarks/gpu_prepare.sh (the machine gets the repo only:
# no ../shared, no mediapipe, no ffmpeg), then call the device tool with
#   run(command="benchmarks/gpu_check.sh", carry=[".gpu", ".whl"], timeout_s=540)
# It installs the carried wheels (.whl/) into /tmp/famswap-site, unpacks a carried ffmpeg (.gpu/bin/ffmpeg.xz),
# takes models and media from .gpu/ (else ../shared), and runs the parts:
#   env      what the machine has (GPU, torch, mediapipe, ffmpeg)
#   model    bench_model.py --models original hires --widths 1 on cuda (bf16 autocast, MFU against the bf16 peak)
#   convert  bench_convert.py --model hires --device cuda on the 720p clip (needs ffmpeg, and mediapipe or the
#            scan carried by the ffmpeg kit, then without the hair segmenter)
#   swap     famswap swap of the 720p clip with selfie_man.mp4, hires on cuda, --train-minutes (default 2)
# A part whose needs are missing is skipped with a line saying why; a failed part does not stop the others. Each has
# a time limit, so the whole stays inside one device call. Results go to DIR (default out/gpu_check); when $OUT is
# set (the device machine), the table, a tarball of every log and JSON file, the swapped clip and its before/after
# GIF are copied there too (the tool returns at most 8 files).
# --cpu-dry-run: every part, small, on the CPU (lite model, seconds of training, the short selfie clip; carried
# wheels and ffmpeg left alone): checks the script and the table where no GPU is lent. Python: $PYTHON or python3.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

dry=0
skip=","
res=out/gpu_check
minutes=""
py=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) dry=1; shift ;;
    --out) res=$2; shift 2 ;;
    --skip) skip=",$2,"; shift 2 ;;
    --train-minutes) minutes=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "gpu_check: $*"; }
mkdir -p "$res"
res=$(cd "$res" && pwd)
rm -f "$res"/{env.json,model.jsonl,convert.json,swap.json,swap_run.json,skipped.txt,table.md,swap.mp4}
skip_part() { printf '%s\t%s\n' "$1" "$2" >> "$res/skipped.txt"; say "$1 skipped: $2"; }
wanted() { case "$skip" in *",$1,"*) skip_part "$1" "--skip"; return 1 ;; esac; return 0; }

# run_part NAME SECONDS CMD...: CMD with a time limit, its output in NAME.log (and the last lines here on failure).
run_part() {
  local name=$1 limit=$2; shift 2
  say "$name: $*"
  local start; start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$res/$name.log" 2>&1
  local rc=$?
  say "$name: exit $rc after $(( $(date +%s) - start )) s"
  if [ $rc -ne 0 ]; then
    tail -n 25 "$res/$name.log" | sed "s/^/  $name| /"
    [ $rc -eq 124 ] && say "$name: stopped at its ${limit} s limit"
  fi
  return $rc
}

# Carried packages and tools (see benchmarks/gpu_prepare.sh): cp312 wheels for the device, so not in a dry run.
if [ $dry -eq 0 ] && compgen -G ".whl/*.whl" > /dev/null; then
  site=/tmp/famswap-site
  if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
      > "$res/pip.log" 2>&1; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    say "installed $(ls .whl/*.whl | wc -l) carried wheels into $site"
  else
    say "installing the carried wheels failed:"; tail -n 5 "$res/pip.log"
  fi
fi
if [ $dry -eq 0 ] && [ -f .gpu/bin/ffmpeg.xz ] && ! command -v ffmpeg > /dev/null; then
  mkdir -p /tmp/famswap-bin
  "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    .gpu/bin/ffmpeg.xz /tmp/famswap-bin/ffmpeg && chmod +x /tmp/famswap-bin/ffmpeg \
    && export PATH="/tmp/famswap-bin:$PATH" && say "unpacked the carried ffmpeg"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

models=.gpu/models
media=.gpu/media
[ -d "$models" ] || models=../shared/models
[ -d "$media" ] || media=../shared/media/clips
clip=$media/scene_woman_room_720p.mp4
selfie=$media/selfie_man.mp4
scan_file=$media/scene.scan.npz

"$py" benchmarks/gpu_table.py env > "$res/env.json" || echo '{}' > "$res/env.json"
cuda=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
mp=$("$py" -c 'import importlib.util as u; print(int(u.find_spec("mediapipe") is not None))')
ff=$("$py" -c 'from swap_engine.ffmpeg_bin import find_ffmpeg; find_ffmpeg(); print(1)' 2>/dev/null || echo 0)
# The swap keeps its bank encrypted through storage/ (cryptography; importing storage needs aiosqlite).
store=$("$py" -c 'import importlib.util as u; print(int(all(u.find_spec(m) for m in ("cryptography", "aiosqlite"))))')
say "machine: $(cat "$res/env.json")"

if [ $dry -eq 1 ]; then
  device=cpu
  model_args=(--models lite --widths 0.25 --seconds 1 --batch 4 --devices cpu)
  clip=$selfie  # short: the dry run checks the plumbing, not the speed
  convert_args=(--model lite --train-seconds 1 --repeats 1 --device cpu)
  swap_args=(--model lite --device cpu --train-minutes "${minutes:-0.05}")
  what="lite on cpu (dry run)"
elif [ "$cuda" = 1 ]; then
  device=cuda
  model_args=(--models original hires --widths 1 --seconds 8 --devices cuda)
  convert_args=(--model hires --train-seconds 20 --device cuda)
  swap_args=(--model hires --device cuda --train-minutes "${minutes:-2}")
  what="hires on cuda"
else
  device=none
fi

# model
if wanted model; then
  if [ "$device" = none ]; then
    skip_part model "no CUDA GPU here (--cpu-dry-run tries the script on the CPU)"
  else
    run_part model 240 "$py" benchmarks/bench_model.py "${model_args[@]}" --json-out "$res/model.jsonl"
  fi
fi

# convert
if wanted convert; then
  if [ "$device" = none ]; then
    skip_part convert "no CUDA GPU here"
  elif [ "$ff" != 1 ]; then
    skip_part convert "no ffmpeg (none on the PATH, no imageio-ffmpeg): carry one with gpu_prepare.sh --kit ffmpeg"
  elif [ "$mp" != 1 ] && [ ! -f "$scan_file" ]; then
    skip_part convert "no mediapipe and no carried scan: carry the wheels (gpu_prepare.sh) or the ffmpeg kit's scan"
  else
    extra=()
    [ "$mp" != 1 ] && extra=(--scan "$scan_file" --no-hair) && say "convert: no mediapipe, so the carried scan and no hair segmenter"
    run_part convert 300 "$py" benchmarks/bench_convert.py --clip "$clip" --model-dir "$models" "${convert_args[@]}" \
      "${extra[@]}" --json-out "$res/convert.json"
  fi
fi

# swap
if wanted swap; then
  if [ "$device" = none ]; then
    skip_part swap "no CUDA GPU here"
  elif [ "$ff" != 1 ] || [ "$mp" != 1 ] || [ "$store" != 1 ]; then
    skip_part swap "needs ffmpeg ($ff), mediapipe ($mp), cryptography and aiosqlite ($store); 1 = present"
  else
    home=$(mktemp -d /tmp/famswap-home.XXXXXX)
    start=$(date +%s.%N)
    run_part swap 420 env FAMSWAP_HOME="$home" FAMSWAP_KEY_FILE="$home/famswap.key" FAMSWAP_MODEL_DIR="$models" \
      "$py" -m famswap.cli swap "$clip" --identity-from "$selfie" --out "$res/swap.mp4" "${swap_args[@]}"
    rc=$?
    seconds=$("$py" -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$start")
    printf '{"rc": %d, "seconds": %s, "what": "%s"}\n' "$rc" "$seconds" "$what" > "$res/swap_run.json"
    rm -rf "$home"
  fi
fi

"$py" benchmarks/gpu_table.py table "$res" | tee "$res/table.md"

if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && [ "$(cd "$OUT" && pwd)" != "$res" ]; then
  tar -czf "$OUT/gpu_check.tar.gz" -C "$res" --exclude='*.mp4' --exclude='*.gif' .
  cp "$res/table.md" "$OUT/"
  for f in swap.mp4 swap.compare.gif; do [ -f "$res/$f" ] && cp "$res/$f" "$OUT/"; done
  say "results in \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
exit 0
