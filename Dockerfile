# famswap: the Discord bot and its worker in one image.
#   GPU (default): docker build -t famswap .                           run: docker compose up -d
#   CPU only:      docker build --build-arg VARIANT=cpu -t famswap:cpu .  run: docker compose -f compose.cpu.yaml up -d
# The GPU image needs the NVIDIA container toolkit on the host; the CPU image needs nothing but Docker.
ARG VARIANT=cuda

# GPU: torch 2.5.1 with CUDA 12.4 on Ubuntu 22.04, Python 3.11 (the image's own).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS base-cuda

# CPU: Debian 12 with Python 3.11 and torch's CPU-only wheel (no 2 GB of CUDA libraries).
FROM python:3.11-slim-bookworm AS base-cpu
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.5.1

FROM base-${VARIANT}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    FAMSWAP_HOME=/data \
    FAMSWAP_MODEL_DIR=/opt/famswap/models \
    FAMSWAP_KEY_FILE=/keys/famswap.key

# famswap needs Python 3.11 or newer (pyproject.toml): stop here on a base that has an older one.
RUN python -c 'import sys; assert sys.version_info >= (3, 11), "famswap needs Python 3.11+, this base has " + sys.version'

# The GL/glib libraries OpenCV (pulled in by mediapipe) loads at import; curl to fetch the models.
# No distribution ffmpeg: Ubuntu 22.04's is 4.4 and Debian 12's 5.1, so the two variants would differ. Both use the
# ffmpeg that imageio-ffmpeg bundles (a static build with libx264), the one CI tests; checked below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libegl1 libgles2 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/famswap/src
COPY pyproject.toml README.md ./
COPY common ./common
COPY famswap ./famswap
COPY swap_engine ./swap_engine
COPY storage ./storage
COPY worker ./worker
COPY bot ./bot
# torch comes from the base stage; the range in pyproject.toml accepts it, so pip keeps it.
RUN pip install .

# The ffmpeg famswap will run: the bundled one, usable (version, libx264), and nothing else on the PATH first.
RUN python -c 'from swap_engine.ffmpeg_bin import find_ffmpeg, unusable_because; t = find_ffmpeg(); \
assert t.source == "bundled" and unusable_because(t) is None, t; print("ffmpeg", t.version, t.ffmpeg)'

# The models, fetched at build time from their official addresses and checked against their published SHA-256:
# the face landmarker and the hair segmenter. A changed or truncated download fails the build.
RUN mkdir -p /opt/famswap/models \
    && curl -fsSL -o /opt/famswap/models/face_landmarker.task \
       https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task \
    && curl -fsSL -o /opt/famswap/models/hair_segmenter.tflite \
       https://storage.googleapis.com/mediapipe-models/image_segmenter/hair_segmenter/float32/1/hair_segmenter.tflite \
    && printf '%s  %s\n' \
       64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff /opt/famswap/models/face_landmarker.task \
       2628cf3ce5f695f604cbea2841e00befcaa3624bf80caf3664bef2656d59bf84 /opt/famswap/models/hair_segmenter.tflite \
       | sha256sum -c - \
    && chmod 0444 /opt/famswap/models/*

RUN useradd --create-home --uid 10001 famswap \
    && mkdir -p /data /keys \
    && chown famswap:famswap /data /keys
USER famswap
VOLUME ["/data", "/keys"]

HEALTHCHECK --interval=1m --timeout=30s CMD famswap doctor > /dev/null || exit 1
ENTRYPOINT ["famswap"]
CMD ["run"]
