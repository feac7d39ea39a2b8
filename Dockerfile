# famswap: the Discord bot and its GPU worker in one image.
# Build: docker build -t famswap .   Run: see compose.yaml (needs the NVIDIA container toolkit for the GPU).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    FAMSWAP_HOME=/data \
    FAMSWAP_MODEL_DIR=/opt/famswap/models \
    FAMSWAP_KEY_FILE=/keys/famswap.key

# ffmpeg for video, and the GL/glib libraries OpenCV (pulled in by mediapipe) loads at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libgl1 libglib2.0-0 libegl1 libgles2 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/famswap/src
COPY pyproject.toml README.md ./
COPY famswap ./famswap
COPY swap_engine ./swap_engine
COPY storage ./storage
COPY bot ./bot
# torch comes from the base image; the range in pyproject.toml accepts it, so pip keeps it.
RUN pip install .

# The face landmark model, fetched at build time and checked against its published SHA-256.
RUN mkdir -p /opt/famswap/models \
    && curl -fsSL -o /opt/famswap/models/face_landmarker.task \
       https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task \
    && echo "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff  /opt/famswap/models/face_landmarker.task" \
       | sha256sum -c -

RUN useradd --create-home --uid 10001 famswap \
    && mkdir -p /data /keys \
    && chown famswap:famswap /data /keys
USER famswap
VOLUME ["/data", "/keys"]

HEALTHCHECK --interval=1m --timeout=30s CMD famswap doctor > /dev/null || exit 1
ENTRYPOINT ["famswap"]
CMD ["run"]
