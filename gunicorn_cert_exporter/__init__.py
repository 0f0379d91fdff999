"""Prometheus exporter for the TLS certificates of Gunicorn servers: files, endpoints, drift, safe reload."""

__version__ = "0.2.0"
