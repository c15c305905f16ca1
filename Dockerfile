# Two images from one file:
#   docker build --target api     -t ddpg-api .      # FastAPI + numpy actor, no torch
#   docker build --target trainer -t ddpg-trainer .  # adds CPU-only torch and gymnasium
# Dependencies are installed from pyproject.toml before the source is copied, so a code change
# rebuilds only the last layers.

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# ---------------------------------------------------------------- base: user, venv location, env
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/var/lib/ddpg \
    PYTHONPATH=/app
RUN groupadd --system --gid 10001 ddpg \
    && useradd --system --uid 10001 --gid ddpg --home-dir /app --shell /usr/sbin/nologin ddpg \
    && mkdir -p /app /var/lib/ddpg \
    && chown ddpg:ddpg /var/lib/ddpg
WORKDIR /app

# ---------------------------------------------------------------- api-deps: the serving dependency set
FROM base AS api-deps
COPY pyproject.toml docker/requirements.py ./
# requirements.py prints [project].dependencies (plus the extras named) from pyproject.toml.
RUN python -m venv /opt/venv \
    && python requirements.py > /tmp/requirements-api.txt \
    && pip install --no-compile -r /tmp/requirements-api.txt \
    && rm /tmp/requirements-api.txt

# ---------------------------------------------------------------- trainer-deps: + CPU-only torch, gymnasium
FROM api-deps AS trainer-deps
# The CPU wheel index keeps CUDA (several GB) out of the image: its "+cpu" builds sort above PyPI's
# same-numbered CUDA builds, so pip takes them. Override the ARG for a GPU build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python requirements.py --only-extra trainer > /tmp/requirements-trainer.txt \
    && pip install --no-compile --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements-trainer.txt \
    && rm /tmp/requirements-trainer.txt

# ---------------------------------------------------------------- api: what serves /act
FROM base AS api
COPY --from=api-deps /opt/venv /opt/venv
COPY --chown=ddpg:ddpg app ./app
COPY --chown=ddpg:ddpg models ./models
COPY --chown=ddpg:ddpg store ./store
COPY --chown=ddpg:ddpg episodes ./episodes
# Inside a container the API must listen beyond loopback; the trainer runs in its own image/service.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    EMBEDDED_WORKER=false
USER 10001:10001
# 8001: the Open Inference Protocol over gRPC, when GRPC_PORT=8001 (docker compose sets it).
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------- trainer: the job worker
FROM base AS trainer
COPY --from=trainer-deps /opt/venv /opt/venv
COPY --chown=ddpg:ddpg trainer ./trainer
COPY --chown=ddpg:ddpg models ./models
COPY --chown=ddpg:ddpg store ./store
COPY --chown=ddpg:ddpg episodes ./episodes
USER 10001:10001
# Healthy while the database answers; a worker that loses its job is caught by the lease, not here.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "store", "ping"]
CMD ["python", "-m", "trainer", "worker"]
