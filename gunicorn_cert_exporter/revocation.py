"""Which reported certificates a verified CRL file answers for, and its answer. Pure: a snapshot in, verdicts out.

A CRL counts only once its signature verified against an issuer certificate the files scan saw. It then answers
for every certificate the exporter reports (files, served chains of endpoints and Gunicorn targets) whose issuer
is the CRL's issuer: ``revoked`` when the serial is listed, else ``good``. Its freshness is its own series and
alert (a stale CRL keeps answering, as nginx's ``ssl_crl`` does until it refuses every client).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gunicorn_cert_exporter.bands import Band
from gunicorn_cert_exporter.file_parts import CrlFacts
from gunicorn_cert_exporter.model import CertFacts, Snapshot, TargetState
from gunicorn_cert_exporter.sources import crl

METHOD_CRL_FILE = "crl_file"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of one CRL for one certificate at one place (a file and entry, or an endpoint address)."""

    path: str
    entry: str
    endpoint: str
    server_name: str
    address: str
    index: int
    status: str  # "good" or "revoked"
    reason: str  # the CRL entry's reason when revoked ("" if it gives none)
    revoked_at: float | None
    crl_issuer: str
    method: str = METHOD_CRL_FILE  # crl_file, or from the revocation pool: crl (a fetched CDP) or ocsp
    url: str = ""  # the distribution point or responder that answered (fetched methods)
    fingerprint_sha256: str = ""

    @property
    def by(self) -> str:
        """Say who answered, for the page and ``check``."""
        if self.method == METHOD_CRL_FILE:
            return f"the CRL of {self.crl_issuer}"
        return f"the CRL at {self.url}" if self.method == "crl" else f"the OCSP responder at {self.url}"

    @property
    def where(self) -> tuple[str, str, str, str, str, str]:
        """Return the source labels and the index, in catalogue order."""
        return (self.path, self.entry, self.endpoint, self.server_name, self.address, str(self.index))


def verified_crls(snap: Snapshot) -> dict[str, CrlFacts]:
    """Return the newest verified CRL of each issuer among the files."""
    newest: dict[str, CrlFacts] = {}
    for result in snap.files:
        for found in result.crls:
            if found.verified and (found.issuer not in newest or found.this_update > newest[found.issuer].this_update):
                newest[found.issuer] = found
    return newest


def verdicts(snap: Snapshot) -> tuple[Verdict, ...]:
    """Answer for every reported certificate: verified CRL files, then what the revocation pool fetched."""
    crls = verified_crls(snap)
    from_files = tuple(_answers(snap, crls)) if crls else ()
    return from_files + tuple(_fetched(snap))


def _fetched(snap: Snapshot) -> Iterator[Verdict]:
    for answer in snap.revocation:
        path, entry, endpoint, server_name, address, index = answer.where
        yield Verdict(
            path, entry, endpoint, server_name, address, int(index), answer.status, answer.reason,
            answer.revoked_at, "", answer.method, answer.url, answer.fingerprint_sha256,
        )  # fmt: skip


def overall(answers: Iterable[Verdict]) -> dict[tuple[str, ...], Verdict]:
    """Return each place's deciding answer: a revoked one, else a good one (unknown answers decide nothing)."""
    out: dict[tuple[str, ...], Verdict] = {}
    for verdict in answers:
        held = out.get(verdict.where)
        if (verdict.status == "revoked" and (held is None or held.status != "revoked")) or (
            verdict.status == "good" and held is None
        ):
            out[verdict.where] = verdict
    return out


def _answers(snap: Snapshot, crls: dict[str, CrlFacts]) -> Iterator[Verdict]:
    for result in snap.files:
        for index, cert in enumerate(result.certs):
            yield from _answer(crls, cert, (result.path, result.entry(index), "", "", ""), index)
    for endpoint in snap.all_endpoints:
        for address in endpoint.addresses:
            for index, cert in enumerate(address.chain):
                where = ("", "", endpoint.endpoint, endpoint.server_name, address.address)
                yield from _answer(crls, cert, where, index)


def _answer(crls: dict[str, CrlFacts], cert: CertFacts, where: tuple[str, ...], index: int) -> Iterator[Verdict]:
    found = crls.get(cert.issuer)
    if found is None or not cert.serial or cert.self_signed:  # a root is no entry of its own CRL
        return
    entry = crl.lookup(found, int(cert.serial, 16))
    path, name, endpoint, server_name, address = where
    yield Verdict(
        path,
        name,
        endpoint,
        server_name,
        address,
        index,
        "good" if entry is None else "revoked",
        "" if entry is None else entry.reason,
        None if entry is None else entry.revoked_at,
        found.issuer,
        fingerprint_sha256=cert.fingerprint_sha256,
    )


def by_place(answers: tuple[Verdict, ...]) -> dict[tuple[str, ...], Verdict]:
    """Index verdicts by place: (path, entry, index) for files, (endpoint, server_name, address, index) for chains."""
    out: dict[tuple[str, ...], Verdict] = {}
    for verdict in overall(answers).values():
        if verdict.path:
            out[(verdict.path, verdict.entry, str(verdict.index))] = verdict
        else:
            out[(verdict.endpoint, verdict.server_name, verdict.address, str(verdict.index))] = verdict
    return out


def crl_band(found: CrlFacts, *, now: float) -> tuple[Band, str]:
    """Judge a CRL file: expired past nextUpdate, warning in the last quarter of its window, else by its signature."""
    if crl.stale(found, now=now):
        return Band.EXPIRED, "CRL past its nextUpdate: relying servers refuse clients"
    if crl.renewal_due(found, now=now):
        return Band.WARNING, "CRL: less than a quarter of its thisUpdate-nextUpdate window left"
    if found.next_update is None:
        return Band.OK, "CRL gives no nextUpdate"
    if found.verify_error:
        return Band.OK, f"CRL signature not verified: {found.verify_error}"
    return Band.OK, ""


def when(verdict: Verdict) -> str:
    """Say when a revoked certificate was revoked (" on 2026-12-07 01:00:00Z"), or nothing when unsaid."""
    if verdict.revoked_at is None:
        return ""
    moment = datetime.datetime.fromtimestamp(verdict.revoked_at, tz=datetime.timezone.utc)
    return f" on {moment:%Y-%m-%d %H:%M:%SZ}"


def revoked_fingerprints(snap: Snapshot) -> frozenset[str]:
    """Return the fingerprints of the certificates a verified answer says are revoked."""
    return frozenset(v.fingerprint_sha256 for v in verdicts(snap) if v.status == "revoked" and v.fingerprint_sha256)


def served_leaf_revoked(state: TargetState, revoked: frozenset[str]) -> bool:
    """Tell whether a target serves a revoked leaf while its cert_file's leaf is not revoked (reload at once)."""
    served = any(a.leaf is not None and a.leaf.fingerprint_sha256 in revoked for a in state.endpoint.addresses)
    return served and state.file_leaf is not None and state.file_leaf.fingerprint_sha256 not in revoked
