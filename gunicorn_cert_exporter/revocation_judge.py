"""What fetched CRLs and OCSP answers say of each reported leaf. Pure: a snapshot and what was fetched in.

The revocation pool (scanning/revocation_pool.py) fetches; this module decides which leaves to ask about, whose
key verifies what, and turns what is known into one ``LeafRevocation`` per leaf and method, and one
``RevocationUrl`` per URL asked. A CRL answers only once verified with the leaf's issuer, inside its
thisUpdate/nextUpdate window; a failed fetch or a bad signature says ``unknown`` with why, never good or revoked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gunicorn_cert_exporter.file_parts import CrlFacts
from gunicorn_cert_exporter.model import CertFacts, LeafRevocation, RevocationUrl, Snapshot
from gunicorn_cert_exporter.sources import crl, crl_index
from gunicorn_cert_exporter.sources.crl_index import SerialIndex
from gunicorn_cert_exporter.sources.ocsp import Answer

METHOD_CRL = "crl"
METHOD_OCSP = "ocsp"
ISSUER_UNKNOWN = "issuer_unknown"
NO_REVOCATION_INFO = "no_revocation_info"
Where = tuple[str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Leaf:
    """One reported leaf, at its place."""

    where: Where  # path, entry, endpoint, server_name, address, index
    cert: CertFacts

    @property
    def fingerprint(self) -> str:
        """Return the leaf's SHA-256 fingerprint."""
        return self.cert.fingerprint_sha256


@dataclass(frozen=True, slots=True)
class CrlFetch:
    """What a distribution point last gave: the last good CRL (kept across failed refetches) and the last error."""

    url: str
    checked_at: float
    next_at: float
    crl: CrlFacts | None = None  # verified (or not) with the leaf's issuer when fetched
    error: str = ""  # the last fetch's reason, or bad_signature / issuer_unknown / unsupported / idp_mismatch
    index: SerialIndex | None = None  # the serials ``crl`` lists


def leaves(snap: Snapshot) -> list[Leaf]:
    """Return every leaf the exporter reports: files' end-entity certificates, Gunicorn targets' cert_file leaves
    and each address's served leaf (each place once)."""
    found = [
        Leaf((result.path, result.entry(index), "", "", "", str(index)), cert)
        for result in snap.files
        for index, cert in enumerate(result.certs)
        if not cert.is_ca and not cert.self_signed and cert.serial
    ]
    for endpoint in snap.all_endpoints:
        for address in endpoint.addresses:
            if address.chain and not address.chain[0].self_signed:
                where = ("", "", endpoint.endpoint, endpoint.server_name, address.address, "0")
                found.append(Leaf(where, address.chain[0]))
    for target in snap.targets:  # a cert_file no files entry lists: a reload may hinge on its answer
        if target.file_leaf is not None and not target.file_leaf.self_signed:
            found.append(Leaf((target.cert.path, "", "", "", "", "0"), target.file_leaf))
    unique: dict[Where, Leaf] = {}
    for leaf in found:
        unique.setdefault(leaf.where, leaf)
    return list(unique.values())


def issuers(snap: Snapshot, extra: Iterable[CertFacts] = ()) -> dict[str, list[CertFacts]]:
    """Index every certificate with a key to verify by its subject: files, served chains, fetched caIssuers."""
    out: dict[str, list[CertFacts]] = {}
    chains = (a.chain for e in snap.all_endpoints for a in e.addresses)
    for cert in (*(c for f in snap.files for c in f.certs), *(c for chain in chains for c in chain), *extra):
        if cert.public_key_der and all(
            c.fingerprint_sha256 != cert.fingerprint_sha256 for c in out.get(cert.subject, ())
        ):
            out.setdefault(cert.subject, []).append(cert)
    return out


def crl_urls(cert: CertFacts) -> list[str]:
    """Return the leaf's http:// distribution points (RFC 5280: CRLs are served over HTTP, signed)."""
    return [url for url in cert.crl_urls if url.lower().startswith("http://")]


def ocsp_key(url: str, cert: CertFacts, issuer: CertFacts) -> str:
    """Return what identifies one OCSP question: the responder, the issuer's key, the serial."""
    return f"{url} {issuer.spki_sha256} {cert.serial}"


def crl_answer(leaf: Leaf, fetched: CrlFetch | None, *, now: float) -> LeafRevocation | None:
    """Judge one leaf by one distribution point's last CRL (None: nothing fetched yet)."""
    if fetched is None:
        return None
    found = fetched.crl
    if found is None or not found.verified:
        why = (found.verify_error if found is not None else "") or fetched.error or "bad_signature"
        return LeafRevocation(
            leaf.where, METHOD_CRL, "unknown", why, url=fetched.url, fingerprint_sha256=leaf.fingerprint
        )
    if found.issuer != leaf.cert.issuer:
        return LeafRevocation(
            leaf.where, METHOD_CRL, "unknown", "unsupported", url=fetched.url, fingerprint_sha256=leaf.fingerprint
        )
    if crl.stale(found, now=now):
        return LeafRevocation(
            leaf.where, METHOD_CRL, "unknown", "stale", url=fetched.url, fingerprint_sha256=leaf.fingerprint
        )
    entry = crl_index.find(fetched.index, int(leaf.cert.serial, 16)) if fetched.index is not None else None
    if entry is None:
        return LeafRevocation(leaf.where, METHOD_CRL, "good", "", url=fetched.url, fingerprint_sha256=leaf.fingerprint)
    return LeafRevocation(
        leaf.where, METHOD_CRL, "revoked", entry.reason, entry.revoked_at, fetched.url, leaf.fingerprint
    )


def ocsp_answer(leaf: Leaf, url: str, answer: Answer | None) -> LeafRevocation | None:
    """Judge one leaf by its responder's last answer (None: not asked yet)."""
    if answer is None:
        return None
    return LeafRevocation(
        leaf.where, METHOD_OCSP, answer.status, answer.reason, answer.revoked_at, url, leaf.fingerprint
    )


def decisive(answers: Iterable[LeafRevocation]) -> Iterator[LeafRevocation]:
    """Keep one answer per leaf and method: revoked over good over unknown (a leaf may name several URLs)."""
    rank = {"revoked": 0, "good": 1, "unknown": 2}
    best: dict[tuple[Where, str], LeafRevocation] = {}
    for answer in answers:
        key = (answer.where, answer.method)
        if key not in best or rank[answer.status] < rank[best[key].status]:
            best[key] = answer
    yield from best.values()


def url_rows(crls: Iterable[CrlFetch], ocsp: Iterable[tuple[str, Answer]], *, now: float) -> tuple[RevocationUrl, ...]:
    """Return one row per URL asked: a CRL's problem (stale once past nextUpdate) and nextUpdate; a responder's."""
    rows = [RevocationUrl(METHOD_CRL, f.url, _crl_error(f, now=now), _next(f.crl)) for f in crls]
    errors: dict[str, str] = {}
    for url, answer in ocsp:
        errors[url] = errors.get(url) or answer.error
    rows += [RevocationUrl(METHOD_OCSP, url, error) for url, error in errors.items()]
    return tuple(sorted(rows, key=lambda r: (r.method, r.url)))


def _next(found: CrlFacts | None) -> float | None:
    """Return a verified CRL's nextUpdate (an unverified one's is anybody's word)."""
    return found.next_update if found is not None and found.verified else None


def _crl_error(fetched: CrlFetch, *, now: float) -> str:
    found = fetched.crl
    if fetched.error or found is None:
        return fetched.error
    return found.verify_error or ("stale" if crl.stale(found, now=now) else "")
