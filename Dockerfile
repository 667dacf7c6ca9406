# syntax=docker/dockerfile:1
#
# poller: Lambda's event source mappings as a container.
#
#   docker build -t poller:0.1.0 .
#   docker run --rm -p 9102:9102 -v "$PWD/config.yaml:/etc/poller/config.yaml:ro" poller:0.1.0
#
# Two stages: the builder makes a wheel of the project and installs it into a virtualenv at
# /opt/venv; the final stage copies only that virtualenv onto a fresh slim base, so no
# compiler, build cache or source tree reaches the image. Both stages must use the same base
# (the venv's interpreter is a symlink to the base's /usr/local/bin/python3.11). Every Python
# package comes from the lock (requirements/*.txt: pinned and hash-checked; `make lock`
# refreshes it); for fully reproducible builds pin the base by digest too:
# --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# pip byte-compiles what it installs: the final image's root filesystem can be read-only.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Only what the wheel is built from, and the lock; .dockerignore allow-lists the same paths.
COPY requirements/build.txt requirements/runtime.txt ./requirements/
COPY pyproject.toml README.md ./
COPY poller ./poller

# The locked build backend, the project's own wheel with it, then the venv: the locked runtime
# dependencies (hash-checked; every one ships wheels for CPython 3.11, manylinux amd64 and
# arm64, so nothing is compiled) and poller's wheel on top without resolving anything. The
# final `--version` is a smoke test that the console script and its imports work.
RUN python -m pip install --require-hashes -r requirements/build.txt \
 && python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements/runtime.txt \
 && /opt/venv/bin/pip install --no-deps /wheels/poller-*.whl \
 && /opt/venv/bin/poller --version

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="poller" \
      org.opencontainers.image.description="Lambda's event source mappings (SQS, Kinesis, DynamoDB Streams) as a self-hosted daemon" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
# /var/lib/poller is the working directory: the default sqlite checkpoint file
# (poller-state.db, a relative path) lands there, and a volume is mounted there in Kubernetes.
RUN groupadd --system --gid 10001 poller \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/poller \
        --shell /usr/sbin/nologin poller \
 && mkdir -p /etc/poller /var/lib/poller \
 && chown 10001:10001 /var/lib/poller

COPY --from=builder /opt/venv /opt/venv

# POLLER_CONFIG is the configuration of `poller run` (CMD) and of `poller healthcheck`
# (HEALTHCHECK) alike: to use another file, set it (docker run -e POLLER_CONFIG=...), and both
# follow.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POLLER_CONFIG=/etc/poller/config.yaml

WORKDIR /var/lib/poller
USER 10001:10001

# /metrics /healthz /readyz /status: the default server.port (publish the one the config sets).
EXPOSE 9102

# The daemon drains in-flight batches on SIGTERM (shutdown_timeout_seconds); give
# `docker stop -t` / terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM

# `poller healthcheck` reads the daemon's configuration ($POLLER_CONFIG, with the container's
# environment, so ${VAR} references resolve as they do for the daemon) and GETs /healthz on its
# server.host and server.port: a port changed in the config is the port checked. Exit 0
# healthy, 1 otherwise (no answer, not 200, an unreadable config, or server.port 0).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["poller", "healthcheck"]

# Exec form: poller is PID 1 and receives SIGTERM itself, no shell in between.
ENTRYPOINT ["poller"]
CMD ["run"]
