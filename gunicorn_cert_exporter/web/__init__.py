"""HTTP: the server, its TLS and basic auth, the /probe allow-list and the status page."""
