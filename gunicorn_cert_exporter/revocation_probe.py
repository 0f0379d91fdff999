"""``/probe?...&revocation=1``: one endpoint's served chain checked for revocation on demand.

The probed result goes into a store of its own and a one-off revocation pool with the config's settings (its
``allow`` list, timeout, size cap) checks its leaf and waits for the answers. A pool of its own, not the shared
one: the shared pool may be busy with a 20 MiB CRL, and /probe already bounds how many probes run at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from gunicorn_cert_exporter import revocation
from gunicorn_cert_exporter.config import Config
from gunicorn_cert_exporter.metrics.collector import Families, add_revocation_urls, add_revocations
from gunicorn_cert_exporter.model import EndpointResult
from gunicorn_cert_exporter.scanning.revocation_pool import RevocationPool
from gunicorn_cert_exporter.scanning.store import Store


def series(result: EndpointResult, *, config: Config) -> Iterable[Metric]:
    """Check the probed chain's leaf and return its revocation series (as /metrics writes them)."""
    store = Store()
    store.update(endpoints=(result,))
    pool = RevocationPool(store=store, workers=1)
    pool.configure(config)
    try:
        pool.settle()
    finally:
        pool.stop()
    snap = store.snapshot
    out = Families()
    add_revocations(out, revocation.verdicts(snap))
    add_revocation_urls(out, snap.revocation_urls)
    return out
