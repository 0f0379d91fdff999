"""Revocation off the scans' path: a small pool fetches CRLs and asks OCSP responders, and publishes the answers.

Its own pool beside ARI's (scanning/renewals.py): a 20 MiB CRL taking its whole time cap must not hold back the
renewal windows, nor ARI requests the CRLs; each is bounded (workers, size, time). A scan never waits: each
published scan only wakes a pass (``observe``), which reads the last snapshot, queues what is due (one fetch per
CRL URL and per OCSP question per ``interval``, never before a server's Retry-After) and publishes what is known:
``Snapshot.revocation`` and ``Snapshot.revocation_urls``. A scrape reads those, as it reads every other part.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace

from gunicorn_cert_exporter import revocation_judge as judge
from gunicorn_cert_exporter.config import Config
from gunicorn_cert_exporter.model import CertFacts, LeafRevocation, Snapshot
from gunicorn_cert_exporter.revocation_config import RevocationConfig
from gunicorn_cert_exporter.safe_read import read_regular
from gunicorn_cert_exporter.scanning.revocation_state import CrlMemory
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import certs, crl_fetched, ocsp
from gunicorn_cert_exporter.sources.fetch import Fetcher, FetchLimits, Resolver, resolve

WORKERS = 2
_CA_FILE_SIZE = 1024 * 1024
_SMALL_SIZE = 64 * 1024  # an OCSP response or an issuer certificate
_log = logging.getLogger("gunicorn_cert_exporter.revocation")


def _certificates(path: str) -> tuple[CertFacts, ...]:
    """Read a ca_file's certificates (bounded; a file that can't be read gives none: the files scan says why)."""
    try:
        return certs.parse(read_regular(path, _CA_FILE_SIZE)).certs
    except OSError:
        return ()


class RevocationPool:
    """The revocation pool of the process: ``configure()`` each config, ``observe()`` each snapshot, ``stop()``."""

    def __init__(
        self,
        *,
        store: Store,
        storage_path: str | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve,
        workers: int = WORKERS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._crl_fetcher = Fetcher(limits=FetchLimits(), resolver=resolver, clock=clock)  # CRLs: up to max_crl_size
        self._small_fetcher = Fetcher(limits=FetchLimits(), resolver=resolver, clock=clock)  # OCSP, caIssuers
        self._settings = RevocationConfig()
        self._ca_files: tuple[str, ...] = ()  # files entries' ca_file: issuers besides the bundles and chains
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="revocation")
        self._lock = threading.Lock()
        self._passing = threading.Lock()  # one pass at a time: a pass that read older answers never publishes last
        self._memory = CrlMemory(storage_path)
        self._crls: dict[str, judge.CrlFetch] = self._memory.load()  # a restart does not refetch every CRL
        self._answers: dict[str, tuple[str, float, ocsp.Answer]] = {}  # key -> (url, next_at, answer)
        self._issuers: dict[str, tuple[float, CertFacts | None]] = {}  # caIssuers URL -> (next_at, certificate)
        self._in_flight: dict[str, Future[None]] = {}
        self._queued = False
        self._seen: tuple[object, ...] = ()
        self.fetches = 0  # requests started (tests count them)

    def configure(self, config: Config) -> None:
        """Take a (new) config: its allow-list, timeout, size cap and interval apply from the next fetch on."""
        self._settings = settings = config.revocation
        self._ca_files = tuple(sorted({source.ca_file for source in config.files if source.ca_file}))
        allow = tuple(settings.allow)
        self._crl_fetcher.limits = FetchLimits(timeout=settings.timeout, max_size=settings.max_crl_size, allow=allow)
        self._small_fetcher.limits = FetchLimits(timeout=settings.timeout, max_size=_SMALL_SIZE, allow=allow)
        if not self._settings.enabled and (self._store.snapshot.revocation or self._store.snapshot.revocation_urls):
            self._store.update(revocation=(), revocation_urls=())
        self.wake()

    def observe(self, snap: Snapshot) -> None:
        """Wake a pass when a scan published new results (never waits; the pool's own publishes are ignored)."""
        seen = (snap.files, snap.endpoints, snap.targets)
        if len(seen) == len(self._seen) and all(a is b for a, b in zip(seen, self._seen, strict=True)):
            return
        self._seen = seen
        self.wake()

    def wake(self) -> None:
        """Queue one pass unless one is already queued."""
        if not self._settings.enabled:
            return
        with self._lock:
            if self._queued:
                return
            self._queued = True
        try:
            self._pool.submit(self._logged(self._pass))
        except RuntimeError:  # stopped
            return

    def settle(self) -> None:
        """Run passes until nothing is in flight (``check`` and ``/probe``: one-off runs, each fetch bounded)."""
        for _ in range(4):  # caIssuers, then the CRLs and OCSP it lets us verify, then publish
            with self._lock:
                self._queued = True
            self._pass()
            with self._lock:
                pending = list(self._in_flight.values())
            if not pending:
                return
            wait(pending)

    def stop(self) -> None:
        """Stop taking work; fetches in flight end within their time cap."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _logged(self, work: Callable[..., None]) -> Callable[..., None]:
        def run(*args: object) -> None:
            try:
                work(*args)
            except Exception:  # noqa: BLE001  (a bug in one pass or fetch must not go unseen)
                _log.exception("revocation work failed")

        return run

    def _submit(self, key: str, work: Callable[..., None], *args: object) -> None:
        """Start one fetch unless one for ``key`` is running (caller holds the lock)."""
        if key in self._in_flight:
            return
        self.fetches += 1
        self._in_flight[key] = self._pool.submit(self._logged(self._finish), key, work, *args)

    def _finish(self, key: str, work: Callable[..., None], *args: object) -> None:
        try:
            work(*args)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
        self.wake()  # publish what was learnt, judged against the latest snapshot

    def _pass(self) -> None:
        with self._passing:
            self._judge_and_publish()

    def _judge_and_publish(self) -> None:
        with self._lock:
            self._queued = False
        settings = self._settings
        if not settings.enabled:
            return
        snap, now = self._store.snapshot, self._clock()
        found = judge.leaves(snap)
        local = [c for path in self._ca_files for c in _certificates(path)]
        with self._lock:
            known = judge.issuers(snap, [*local, *(c for _, c in self._issuers.values() if c is not None)])
            answers = list(self._queue_and_judge(found, known, settings, now))
            rows = judge.url_rows(
                self._crls.values(), ((url, answer) for url, _, answer in self._answers.values()), now=now
            )
        answers.sort(key=lambda a: (a.where, a.method))
        if tuple(answers) != snap.revocation or rows != snap.revocation_urls:
            self._store.update(revocation=tuple(answers), revocation_urls=rows)

    def _queue_and_judge(
        self, found: list[judge.Leaf], known: dict[str, list[CertFacts]], settings: RevocationConfig, now: float
    ) -> Iterator[LeafRevocation]:
        """Start what is due and judge each leaf by what is known (caller holds the lock)."""
        for leaf in found:
            issuers = known.get(leaf.cert.issuer, [])
            if not issuers:
                self._want_issuer(leaf.cert, now=now)
            crl_urls = judge.crl_urls(leaf.cert) if "crl" in settings.methods else []
            ocsp_urls = leaf.cert.ocsp_urls if "ocsp" in settings.methods else ()
            if not crl_urls and not ocsp_urls:
                yield LeafRevocation(leaf.where, settings.methods[0], "unknown", judge.NO_REVOCATION_INFO)
                continue
            yield from judge.decisive(self._crl_answers(leaf, crl_urls, issuers, now=now))
            yield from judge.decisive(self._ocsp_answers(leaf, ocsp_urls, issuers, now=now))

    def _crl_answers(
        self, leaf: judge.Leaf, urls: list[str], issuers: list[CertFacts], *, now: float
    ) -> Iterator[LeafRevocation]:
        for url in urls:
            fetched = self._crls.get(url)
            if fetched is None or now >= fetched.next_at:
                self._submit(f"crl {url}", self._fetch_crl, url, issuers, self._settings)
            elif fetched.crl is not None and fetched.crl.verified is None and issuers:  # kept across a restart
                self._submit(f"crl {url}", self._verify_crl, url, issuers)
            answer = judge.crl_answer(leaf, fetched, now=now)
            if answer is not None:
                yield answer

    def _ocsp_answers(
        self, leaf: judge.Leaf, urls: tuple[str, ...], issuers: list[CertFacts], *, now: float
    ) -> Iterator[LeafRevocation]:
        for url in urls:
            if not issuers:
                yield LeafRevocation(leaf.where, judge.METHOD_OCSP, "unknown", judge.ISSUER_UNKNOWN, url=url)
                continue
            key = judge.ocsp_key(url, leaf.cert, issuers[0])
            known = self._answers.get(key)
            if known is None or now >= known[1]:
                self._submit(f"ocsp {key}", self._ask_ocsp, key, url, leaf.cert, issuers[0], self._settings)
            answer = judge.ocsp_answer(leaf, url, known[2] if known is not None else None)
            if answer is not None:
                yield answer

    def _want_issuer(self, cert: CertFacts, *, now: float) -> None:
        for url in cert.ca_issuers:
            if url.lower().startswith("http://") and (url not in self._issuers or now >= self._issuers[url][0]):
                self._submit(f"issuer {url}", self._fetch_issuer, url, self._settings)

    def _fetch_crl(self, url: str, issuers: list[CertFacts], settings: RevocationConfig) -> None:
        answer = self._crl_fetcher.get(url)
        now = self._clock()
        next_at = max(now + settings.interval, answer.retry_after or 0.0)
        with self._lock:
            before = self._crls.get(url)
        kept = before.crl if before is not None else None
        index = before.index if before is not None else None
        if not answer.ok:
            reason = answer.error.value if answer.error is not None else "error"
            fetched = judge.CrlFetch(url, now, next_at, kept, reason, index)
        elif isinstance(read := crl_fetched.read(answer.body, url=url), str):
            fetched = judge.CrlFetch(url, now, next_at, kept, read, index)
        else:
            verified = crl_fetched.verify(read, issuers)
            fetched = judge.CrlFetch(url, now, next_at, verified, "", read.index)
        with self._lock:
            self._crls[url] = fetched
            crls = dict(self._crls)
        self._memory.save(crls, changed=fetched if fetched.crl is not kept else None)

    def _verify_crl(self, url: str, issuers: list[CertFacts]) -> None:
        with self._lock:
            fetched = self._crls.get(url)
        if fetched is None or fetched.crl is None:
            return
        if fetched.index is None:
            return
        verified = crl_fetched.verify(crl_fetched.Published(fetched.crl, fetched.index), issuers)
        with self._lock:
            self._crls[url] = replace(fetched, crl=verified)

    def _ask_ocsp(self, key: str, url: str, leaf: CertFacts, issuer: CertFacts, settings: RevocationConfig) -> None:
        body = ocsp.request(leaf=leaf, issuer=issuer, algorithm=settings.ocsp_hash)
        sent = self._small_fetcher.post(url, body, content_type=ocsp.CONTENT_TYPE)
        now = self._clock()
        if not sent.ok:
            reason = sent.error.value if sent.error is not None else "error"
            answer = ocsp.Answer("unknown", reason, error=reason)
        else:
            answer = ocsp.judge(sent.body, leaf=leaf, issuer=issuer, algorithm=settings.ocsp_hash, now=now)
        with self._lock:
            self._answers[key] = (url, max(now + settings.interval, sent.retry_after or 0.0), answer)

    def _fetch_issuer(self, url: str, settings: RevocationConfig) -> None:
        answer = self._small_fetcher.get(url)
        found: CertFacts | None = None
        if answer.ok:
            parsed = certs.parse(answer.body)
            found = next((c for c in parsed.certs if c.public_key_der), None)
        with self._lock:
            self._issuers[url] = (self._clock() + settings.interval, found)
