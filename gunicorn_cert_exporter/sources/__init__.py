"""Observers: certificate bytes, paths, TLS endpoints and Gunicorn processes to frozen result values."""
