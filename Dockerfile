# syntax=docker/dockerfile:1
# sift worker/producer image. Build: `docker compose build` (or `docker build -t sift:local .`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/sift/.cache/huggingface

# Non-root user. The HF cache directory is created here, owned by `sift`, so that an empty named
# volume mounted on it (compose's hf-cache) inherits that ownership instead of root's.
RUN groupadd --gid 1000 sift \
    && useradd --uid 1000 --gid sift --create-home --shell /usr/sbin/nologin sift \
    && mkdir -p "$HF_HOME" \
    && chown -R sift:sift /home/sift/.cache

# torch first, pinned, in its own layer: it is by far the largest dependency and changes rarely,
# so code changes do not re-download it. A bare `torch` requirement would resolve to another build.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}"

WORKDIR /opt/sift-src
COPY . .
# torch is already satisfied, so this only adds sift and its worker extras.
RUN pip install ".[worker]" \
    && sift --help > /dev/null

USER sift
WORKDIR /home/sift

# Compose passes the full command (`sift worker ...`); exec form there keeps sift as the process that
# receives SIGTERM (compose adds an init for the workers). No ENTRYPOINT, so `docker run sift:local sift ...` works.
CMD ["sift", "--help"]
