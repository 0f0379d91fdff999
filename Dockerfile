# gunicorn-cert-exporter: the README's install (pinned by requirements/runtime.txt) into a virtual environment
# at /opt/venv, on Debian's Python, in two stages; the final one has no pip, no compiler and runs as uid 65532.
#
#   docker build --build-arg VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' gunicorn_cert_exporter/__init__.py)" \
#       -t gunicorn-cert-exporter .
#   docker run -p 9793:9793 gunicorn-cert-exporter            # the embedded default config
#
# BASE is any Debian 12 image: Docker Hub's debian:bookworm-slim by default; CI (scripts/image-test) builds one
# of the same name from Debian's packages with mmdebstrap.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
# What the build reads: the version is dynamic (gunicorn_cert_exporter.__version__), the readme is the long
# description, and requirements/runtime.txt pins every runtime dependency.
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY gunicorn_cert_exporter ./gunicorn_cert_exporter
# The README's install with the same pins as scripts/install; the `demo` extra (Gunicorn) makes
# `docker run IMAGE demo` work. Then pip and setuptools leave the venv: the final stage installs nothing.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -c requirements/runtime.txt '.[demo]' \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
    && rm -rf /opt/venv/bin/pip* /opt/venv/bin/easy_install* /opt/venv/lib/python3*/site-packages/_distutils_hack \
        /opt/venv/lib/python3*/site-packages/distutils-precedence.pth

FROM ${BASE}
ARG VERSION=unknown
LABEL org.opencontainers.image.title="gunicorn-cert-exporter" \
      org.opencontainers.image.description="Prometheus exporter that keeps Gunicorn's TLS certificates from silently expiring or drifting" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/gunicorn-cert-exporter/gunicorn-cert-exporter" \
      org.opencontainers.image.licenses="Apache-2.0"
# The interpreter the venv was made with (same path, same version) and the OS trust store, which the embedded
# default config reports; python3-venv, pip and compilers stay in the build stage.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 exporter \
    && useradd --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin exporter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Reading certificates needs only read access; signalling a Gunicorn master needs the same user as the master
# (or CAP_KILL) and a shared process namespace: see docs/operations.md. `demo` writes to /tmp (mode 1777).
USER 65532:65532
EXPOSE 9793
# No curl: Python's urllib. With another --web.listen-address port, set HEALTHCHECK_URL; /healthz sits behind
# --web.config.file's TLS and basic auth too, so with those use the orchestrator's own probe instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:9793/healthz'), timeout=4)"]
# Exec form: the exporter is PID 1 and receives SIGTERM (clean stop) and SIGHUP (config reload) itself.
# With no --config it serves the embedded default; mount a config and pass
# `serve --config /etc/gunicorn-cert-exporter/config.yaml` to use yours (README: "Container image").
ENTRYPOINT ["gunicorn-cert-exporter"]
CMD ["serve"]
