"""What the ARI pool learnt, per certificate: at most once per interval, Retry-After, kept across restarts.

The answers come from ``tests.acme_support.AcmeServer``, RFC 9773's resources on loopback (no ARI-capable ACME
server is packaged here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gunicorn_cert_exporter.scanning.ari_state import FILENAME
from tests.acme_support import (
    DAY,
    EXPLANATION,
    HOUR,
    AcmeServer,
    Reply,
    ari_config,
    ari_service,
    band_of,
    frozen_clock,
    id_of,
    leaf_file,
    utc_now,
)
from tests.support import Issued


def test_a_certificate_is_asked_at_most_once_per_interval(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    now = [time.time()]
    leaf, path = leaf_file(tmp_path, ca, "often", lifetime_days=90, left=80 * DAY)
    acme.answer(leaf, Reply(utc_now() + 48 * DAY, utc_now() + 50 * DAY))
    service = ari_service(ari_config(tmp_path, {path: acme.directory}), clock=lambda: now[0])
    for _ in range(3):
        service.scan_now()
        now[0] += 1
    assert acme.asked(leaf) == 1
    now[0] += 3  # 6 s after the first request: the 5 s interval has passed
    service.scan_now()
    assert acme.asked(leaf) == 2


def test_retry_after_outlasts_the_interval_and_a_restart(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """A 503 with Retry-After: 3600 is asked once: not after the 5 s interval, nor after a restart."""
    leaf, path = leaf_file(tmp_path, ca, "busy", lifetime_days=90, left=80 * DAY)
    acme.answer(leaf, Reply(status=503, retry_after=3600))
    storage = tmp_path / "storage"
    storage.mkdir()
    config_path = ari_config(tmp_path, {path: acme.directory})
    start = time.time()
    # Each run is a separate process's life, with its own (frozen) clock: what one left running can't act later.
    ari_service(config_path, clock=frozen_clock(start), storage=storage).scan_now()
    ari_service(config_path, clock=frozen_clock(start + 60), storage=storage).scan_now()
    assert acme.asked(leaf) == 1
    ari_service(config_path, clock=frozen_clock(start + 3660), storage=storage).scan_now()
    assert acme.asked(leaf) == 2


def test_what_was_learnt_survives_a_restart(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    leaf, path = leaf_file(tmp_path, ca, "kept", lifetime_days=90, left=81 * DAY)
    acme.answer(leaf, Reply(utc_now() - 2 * HOUR, utc_now() - HOUR, EXPLANATION))
    storage = tmp_path / "storage"
    storage.mkdir()
    config_path = ari_config(tmp_path, {path: acme.directory})
    start = time.time()
    ari_service(config_path, storage=storage, clock=frozen_clock(start)).scan_now()
    assert acme.asked(leaf) == 1
    again = ari_service(config_path, storage=storage, clock=frozen_clock(start + 1))
    again.scan_now()
    assert acme.asked(leaf) == 1  # within the interval: not asked again after the restart
    assert band_of(again.snapshot(), start + 1, "kept.test") == "critical"


def test_a_damaged_state_file_starts_afresh(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """An entry for this very certificate with a time that is no number: the file is set aside, the CA asked."""
    leaf, path = leaf_file(tmp_path, ca, "damaged", lifetime_days=90, left=80 * DAY)
    acme.answer(leaf, Reply(utc_now() + 48 * DAY, utc_now() + 50 * DAY))
    storage = tmp_path / "storage"
    storage.mkdir()
    entry = dict.fromkeys(["start", "end", "latest_end"])
    entry |= {"directory": acme.directory, "cert_id": id_of(leaf), "checked_at": 1.0, "next_at": "never"}
    entry |= {"explanation_url": "", "error": "", "detail": ""}
    (storage / FILENAME).write_text(json.dumps({"version": 1, "entries": [entry]}))
    ari_service(ari_config(tmp_path, {path: acme.directory}), storage=storage).scan_now()
    assert acme.asked(leaf) == 1
    assert json.loads((storage / FILENAME).read_text())["entries"][0]["end"] is not None
