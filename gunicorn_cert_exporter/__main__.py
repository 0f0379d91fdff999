"""Run the exporter with ``python -m gunicorn_cert_exporter``."""

from gunicorn_cert_exporter.cli import main

raise SystemExit(main())
