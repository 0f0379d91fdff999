# gunicorn-cert-exporter: the same install as the README, in two stages, running as a non-root user.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY gunicorn_cert_exporter ./gunicorn_cert_exporter
# The README's install (scripts/install): the `demo` extra (Gunicorn) at the versions pinned in requirements/.
RUN pip install --no-cache-dir --prefix=/install -c requirements/runtime.txt '.[demo]'

FROM python:3.12-slim
COPY --from=build /install /usr/local
# Reading certificates needs only read access; signalling a Gunicorn master needs the same user as the master
# (or CAP_KILL) and a shared process namespace: see docs/operations.md.
RUN useradd --system --uid 65532 --no-create-home exporter
USER 65532
EXPOSE 9793
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9793/healthz', timeout=4)"]
# Exec form: the exporter is PID 1 and receives SIGTERM (clean stop) and SIGHUP (config reload) itself.
ENTRYPOINT ["gunicorn-cert-exporter"]
CMD ["serve", "--config", "/etc/gunicorn-cert-exporter/config.yaml"]
