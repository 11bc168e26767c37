# syntax=docker/dockerfile:1
# sift images: two build targets from one file. `docker compose build` builds both; by hand:
#   docker build --target app    -t sift:local .         # sift ingress / deliver / backfill / health / submit
#   docker build --target worker -t sift-worker:local .  # sift worker / workers (also the default target)
#
# Why two images and not one with every extra: the producer side (ingress, webhook dispatcher, backfills) needs no
# torch. Without it the `app` image is a few hundred MB instead of several GB, so machines that only run the
# ingress or the dispatcher never pull CUDA libraries, and a code change rebuilds it in seconds.
FROM python:3.11-slim AS base

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

WORKDIR /opt/sift-src


# Producers: the HTTP ingress (FastAPI, uvicorn), webhook delivery (httpx) and the backfill sinks (psycopg for
# PostgreSQL, pyarrow for Parquet). The import check fails the build if a wheel is missing a native library
# (psycopg[binary] ships its own libpq).
FROM base AS app
COPY . .
RUN pip install ".[ingress,sinks,delivery]" \
    && python -c "import fastapi, uvicorn, httpx, psycopg, pyarrow" \
    && sift --help > /dev/null

USER sift
WORKDIR /home/sift
CMD ["sift", "--help"]


# Workers: the models' runtime.
FROM base AS worker

# torch first, pinned, in its own layer: it is by far the largest dependency and changes rarely,
# so code changes do not re-download it. A bare `torch` requirement would resolve to another build.
# Keep the version in step with the `worker` extra of pyproject.toml, or the next step reinstalls torch.
# This is PyPI's Linux build, i.e. the CUDA one: its CUDA runtime comes as nvidia-* wheels, so the slim base
# needs no CUDA image and the host only needs the NVIDIA driver and container toolkit. The same image runs the
# CPU workers (the CUDA libraries then only take disk space).
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}"

COPY . .
# torch is already satisfied, so this only adds sift, its worker extras and ONNX Runtime (CPU workers serve it:
# `cpu_runtime: auto`; a GPU worker runs torch).
RUN pip install ".[worker,onnx]" \
    && python -c "import torch, transformers" \
    && sift --help > /dev/null

USER sift
WORKDIR /home/sift

# Compose passes the full command (`sift worker ...`); exec form there keeps sift as the process that
# receives SIGTERM (compose adds an init for the workers). No ENTRYPOINT, so `docker run sift-worker:local sift ...`
# works.
CMD ["sift", "--help"]
