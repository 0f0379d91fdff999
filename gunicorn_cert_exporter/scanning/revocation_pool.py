"""Revocation off the scans' path: a small pool fetches CRLs and asks OCSP responders, and publishes the answers.

A ``FetchPool`` (fetch_pool.py) of its own beside ARI's, bounded in workers, size and time. Each pass reads the last
snapshot, queues what is due (one fetch per CRL URL and per OCSP question per ``interval``, never before a server's
Retry-After) and publishes what is known: ``Snapshot.revocation`` and ``Snapshot.revocation_urls``. A scrape reads
those, as it reads every other part.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import wait
from dataclasses import replace

from gunicorn_cert_exporter import revocation_judge as judge
from gunicorn_cert_exporter.config import Config
from gunicorn_cert_exporter.model import CertFacts, LeafRevocation
from gunicorn_cert_exporter.revocation_config import RevocationConfig
from gunicorn_cert_exporter.safe_read import read_regular
from gunicorn_cert_exporter.scanning.fetch_pool import FetchPool
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


class RevocationPool(FetchPool):
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
        super().__init__(workers=workers, name="revocation", log=_log)
        self._store = store
        self._clock = clock
        self._crl_fetcher = Fetcher(limits=FetchLimits(), resolver=resolver, clock=clock)  # CRLs: up to max_crl_size
        self._small_fetcher = Fetcher(limits=FetchLimits(), resolver=resolver, clock=clock)  # OCSP, caIssuers
        self._settings = RevocationConfig()
        self._ca_files: tuple[str, ...] = ()  # files entries' ca_file: issuers besides the bundles and chains
        self._passing = threading.Lock()  # one pass at a time: a pass that read older answers never publishes last
        self._memory = CrlMemory(storage_path)
        self._crls: dict[str, judge.CrlFetch] = self._memory.load()  # a restart does not refetch every CRL
        self._answers: dict[str, tuple[str, float, ocsp.Answer]] = {}  # key -> (url, next_at, answer)
        self._issuers: dict[str, tuple[float, CertFacts | None]] = {}  # caIssuers URL -> (next_at, certificate)

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

    def settle(self) -> None:
        """Run passes until nothing is in flight (``check`` and ``/probe``: one-off runs, each fetch bounded)."""
        for _ in range(4):  # caIssuers, then the CRLs and OCSP it lets us verify, then publish
            self._hold_queued()
            self._pass()
            pending = self._pending()
            if not pending:
                return
            wait(pending)

    def _enabled(self) -> bool:
        return self._settings.enabled

    def _pass(self) -> None:
        with self._passing:
            self._judge_and_publish()

    def _judge_and_publish(self) -> None:
        self._take_queued()
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
