# syntax=docker/dockerfile:1
#
# authgate container image.
#
#   docker build -t authgate .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 authgate
#
# The image runs as uid 10001, writes nothing outside /tmp (a read-only root filesystem
# works), and listens on 0.0.0.0:8080. Configuration: mount a YAML file and point
# AUTHGATE_CONFIG (or `serve --config`) at it, and pass secrets as AUTHGATE_<SECTION>__<KEY>
# environment variables. With neither, authgate starts on in-memory stores with ephemeral
# keys and warns; it is NOT zero-config development mode, because `--host` counts as
# configuration (set AUTHGATE_DEVELOPMENT=true to try development mode).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: compilers for any dependency without a wheel; never shipped ----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/authgate

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# A regular (not editable) install into the venv; pip byte-compiles the installed modules
# here, so the read-only runtime never needs to write a .pyc.
RUN /opt/authgate/bin/pip install --no-cache-dir ".[fast]"
# pip and setuptools are not needed at run time; fewer tools for an intruder.
RUN /opt/authgate/bin/python -m pip uninstall -y pip setuptools \
 && /opt/authgate/bin/authgate --help >/dev/null

# --- runtime: slim Python, the venv, an unprivileged user -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="Authentication gateway: sidecar proxy and forward-auth target" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/authgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TMPDIR=/tmp

RUN groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin authgate \
 && mkdir -p /etc/authgate \
 && chmod 0755 /etc/authgate

COPY --from=builder /opt/authgate /opt/authgate

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# No curl in the slim image: Python's urllib asks /healthz. The port follows
# AUTHGATE_SERVER__OPS_PORT (the ops listener, which serves /healthz when set), else
# AUTHGATE_SERVER__PORT (a port changed only in a config file needs the same variable, or a
# healthcheck of your own). urlopen raises on any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('AUTHGATE_SERVER__OPS_PORT') or os.environ.get('AUTHGATE_SERVER__PORT', '8080')), timeout=3)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["authgate"]
# server.host defaults to 127.0.0.1, which nothing outside the container can reach.
CMD ["serve", "--host", "0.0.0.0"]
