"""Run the exporter with ``python -m gunicorn_cert_exporter``."""

from gunicorn_cert_exporter.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
