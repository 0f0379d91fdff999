"""ARI off the scans' path: a small pool asks ACME servers for renewal windows and publishes ``Snapshot.ari``.

A ``FetchPool`` (fetch_pool.py): each pass reads the last snapshot, finds the leaves with an ACME directory (files
entries, endpoints and targets with ``acme``, and certbot lineages) and queues those due: at most one request per
certificate per ``interval``, never before the server's Retry-After. Every answer is judged (renewal.py) and
published at once, and kept under --storage.path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass, replace

from gunicorn_cert_exporter import renewal
from gunicorn_cert_exporter.config import Config, FileSource
from gunicorn_cert_exporter.model import AriResult, CertFacts, RenewalAdvice, Snapshot
from gunicorn_cert_exporter.scanning.ari_state import MAX_ENTRIES, Entry, Memory, key_of
from gunicorn_cert_exporter.scanning.fetch_pool import FetchPool
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import certbot, globs
from gunicorn_cert_exporter.sources.ari import NO_KEY_IDENTIFIER, Answer, Client, cert_id
from gunicorn_cert_exporter.sources.fetch import Fetcher, FetchLimits, Resolver, resolve

WORKERS = 3
_log = logging.getLogger("gunicorn_cert_exporter.ari")


@dataclass(frozen=True, slots=True)
class Subject:
    """One leaf in use with the ACME directory that issued it."""

    kind: str  # "file", "endpoint" or "target"
    source: str
    cert: CertFacts
    directory: str
    renew_before: float | None = None  # a certbot lineage's renew_before_expiry

    @property
    def key(self) -> str:
        """Return the certificate's key at its server ("" when no certID can be made)."""
        if not self.cert.authority_key_id:
            return ""
        identity = cert_id(key_identifier=bytes.fromhex(self.cert.authority_key_id), serial=int(self.cert.serial, 16))
        return key_of(self.directory, identity)


def lineage_sources(config: Config) -> list[FileSource]:
    """Return the certbot lineages' certificates as files to scan (when ARI is on and a config dir is set)."""
    acme = config.acme
    if not acme.ari.enabled or not acme.certbot_config_dir:
        return []
    found = certbot.lineages(acme.certbot_config_dir)
    return [FileSource(paths=[lineage.cert]) for lineage in found]


def subjects(config: Config, snap: Snapshot) -> list[Subject]:
    """Find every leaf of the snapshot that has an ACME directory (reads the certbot lineages and file globs)."""
    by_path: dict[str, tuple[str, float | None]] = {}
    acme = config.acme
    if acme.certbot_config_dir:
        for lineage in certbot.lineages(acme.certbot_config_dir):
            by_path[lineage.cert] = (lineage.server, lineage.renew_before_expiry)
    sourced = [s for s in config.files if s.acme is not None]
    for source in sourced:
        assert source.acme is not None  # noqa: S101  (filtered above)
        wanted, _ = globs.Finder(max_files=config.scan.max_files).expand([source])
        by_path.update((w.path, (source.acme.directory, None)) for w in wanted)
    found = [
        Subject("file", f.path, f.certs[0], *by_path[f.path])
        for f in snap.files
        if f.path in by_path and f.certs and not f.certs[0].is_ca
    ]
    endpoints = {e.address: e.acme.directory for e in config.endpoints if e.acme is not None}
    for endpoint in snap.endpoints:
        if endpoint.endpoint in endpoints:
            leaves = {a.leaf.fingerprint_sha256: a.leaf for a in endpoint.addresses if a.leaf is not None}
            found += [Subject("endpoint", endpoint.endpoint, c, endpoints[endpoint.endpoint]) for c in leaves.values()]
    targets = {t.name: t.acme.directory for t in config.gunicorn if t.acme is not None}
    for target in snap.targets:
        if target.name in targets:
            served = [a.leaf for a in target.endpoint.addresses if a.leaf is not None]
            leaves = {c.fingerprint_sha256: c for c in [*([target.file_leaf] if target.file_leaf else []), *served]}
            found += [Subject("target", target.name, c, targets[target.name]) for c in leaves.values()]
    return found


def result(subject: Subject, entry: Entry | None, *, now: float) -> AriResult:
    """Judge one subject by what is known of its certificate's window."""
    cert = subject.cert
    base = AriResult(subject.kind, subject.source, cert.fingerprint_sha256, cert.serial, subject.directory)
    if not subject.key:
        return replace(base, error=NO_KEY_IDENTIFIER, note="no authority key identifier: no ARI certID")
    if entry is None:
        return replace(base, note="not asked yet")
    known = replace(base, error=entry.error, checked_at=entry.checked_at, explanation_url=entry.explanation_url)
    if entry.start is None or entry.end is None:
        return replace(known, note=entry.detail)
    advice, note = renewal.advise(
        end=entry.end,
        latest_end=entry.latest_end if entry.latest_end is not None else entry.end,
        not_before=cert.not_before,
        not_after=cert.not_after,
        renew_before=subject.renew_before,
        now=now,
    )
    if advice is RenewalAdvice.REQUESTED and entry.explanation_url:
        note = f"{note} ({entry.explanation_url})"
    return replace(known, advice=advice, note=note, window_start=entry.start, window_end=entry.end)


def learnt(
    before: Entry | None, answer: Answer, *, directory: str, identity: str, now: float, interval: float
) -> Entry:
    """Fold one answer into what is known: a failed request keeps the last window it had."""
    next_at = max(now + interval, answer.retry_after or 0.0)
    if answer.window is None:
        kept = before or Entry(directory, identity, now, next_at)
        return replace(kept, checked_at=now, next_at=next_at, error=answer.error, detail=answer.detail)
    window = answer.window
    latest = max(window.end, before.latest_end if before and before.latest_end is not None else window.end)
    return Entry(directory, identity, now, next_at, window.start, window.end, latest, window.explanation_url)


class Renewals(FetchPool):
    """The ARI pool of the process: ``configure()`` with each config, ``observe()`` each snapshot, ``stop()``."""

    def __init__(
        self,
        *,
        store: Store,
        storage_path: str | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve,
        workers: int = WORKERS,
    ) -> None:
        super().__init__(workers=workers, name="ari", log=_log)
        self._store = store
        self._clock = clock
        self._memory = Memory(storage_path)
        self._entries = self._memory.load()
        self._fetcher = Fetcher(limits=FetchLimits(), resolver=resolver, clock=clock)
        self._client: Client | None = None
        self._config: Config | None = None

    def configure(self, config: Config) -> None:
        """Take a (new) config: its allow-list, timeout and interval apply from the next request on."""
        ari = config.acme.ari
        self._fetcher.limits = FetchLimits(timeout=ari.timeout, max_size=64 * 1024, allow=tuple(ari.allow))
        self._client = Client(fetcher=self._fetcher, clock=self._clock, directory_ttl=ari.interval)
        self._config = config
        if not ari.enabled and self._store.snapshot.ari:
            self._store.update(ari=())
        self.wake()

    def settle(self) -> None:
        """Run a pass now and wait for the requests it starts (``check``: a one-off run, each bounded in time)."""
        self._hold_queued()
        self._pass()
        wait(self._pending())
        self._pass()  # publish what was learnt (nothing is due again)

    def _enabled(self) -> bool:
        return self._config is not None and self._config.acme.ari.enabled

    def _pass(self) -> None:
        self._take_queued()
        config, client = self._config, self._client
        if config is None or client is None or not config.acme.ari.enabled:
            return
        found = subjects(config, self._store.snapshot)
        now = self._clock()
        for subject in found:
            key = subject.key
            with self._lock:
                entry = self._entries.get(key)
                if key and (entry is None or now >= entry.next_at):
                    self._submit(key, self._ask, client, subject, config.acme.ari.interval)
        self._publish(found)

    def _ask(self, client: Client, subject: Subject, interval: float) -> None:
        key = subject.key
        answer = client.ask(
            directory=subject.directory, key_identifier=subject.cert.authority_key_id, serial=subject.cert.serial
        )
        identity = key.split(" ", 1)[1]
        with self._lock:
            before = self._entries.get(key)
            entry = learnt(
                before, answer, directory=subject.directory, identity=identity, now=self._clock(), interval=interval
            )
            self._entries[key] = entry
            if len(self._entries) > MAX_ENTRIES:  # renewed certificates leave entries behind: keep the newest
                newest = sorted(self._entries.values(), key=lambda e: e.checked_at)[-MAX_ENTRIES:]
                self._entries = {e.key: e for e in newest}
            entries = dict(self._entries)
        self._memory.save(entries)

    def _publish(self, found: list[Subject]) -> None:
        now = self._clock()
        with self._lock:
            results = [result(s, self._entries.get(s.key), now=now) for s in found]
        results.sort(key=lambda r: (r.kind, r.source, r.fingerprint_sha256))
        if tuple(results) != self._store.snapshot.ari:
            self._store.update(ari=tuple(results))
