"""Which format a file's bytes are in, and the parser of each: PEM, DER, PKCS#12, JKS/JCEKS, kubeconfig, CRL.

Pure: a kubeconfig's referenced files come through the ``read`` callable the files scan passes in.
"""

from __future__ import annotations

import os
from dataclasses import replace

from gunicorn_cert_exporter.file_parts import EntryProblem, Parsed
from gunicorn_cert_exporter.model import CertFacts
from gunicorn_cert_exporter.reasons import FileReason
from gunicorn_cert_exporter.sources import certs, crl, keystore, kubeconfig

Format = certs.Format


def _no_references(path: str) -> tuple[FileReason, str]:
    return FileReason.READ_ERROR, "referenced files are not read here"


def parse(
    data: bytes,
    *,
    fmt: Format = "auto",
    password: bytes | None = None,
    name: str = "",
    cache: certs.FactsCache | None = None,
    read: kubeconfig.Reader = _no_references,
) -> Parsed:
    """Parse one file's content in its format (``auto`` tells them apart); never raises for bad input."""
    if not data.strip():
        return Parsed(error=FileReason.EMPTY)
    if fmt == "jks" or (fmt == "auto" and keystore.is_keystore(data)):
        return _keystore(data, password, cache)
    pem = b"-----BEGIN " in data
    if fmt == "kubeconfig" or (fmt == "auto" and not pem and kubeconfig.looks_like_kubeconfig(data)):
        return _kubeconfig(data, name=name, cache=cache, read=read)
    if fmt in ("auto", "pem") and b"-----BEGIN X509 CRL-----" in data:
        return _pem_with_crls(data, fmt, cache)
    if fmt in ("auto", "der") and not pem and crl.looks_like_der_crl(data):
        found = crl.parse(data)
        if isinstance(found, str):
            return Parsed(error=FileReason.PARSE_ERROR, detail=found)
        return Parsed(crls=(found,))
    return certs.parse(data, fmt=fmt, password=password, name=name, cache=cache)


def _pem_with_crls(data: bytes, fmt: Format, cache: certs.FactsCache | None) -> Parsed:
    blocks, problems = crl.pem_blocks(data)
    found, broken = [], list(problems)
    for number, block in enumerate(blocks, start=1):
        parsed = crl.parse(block)
        if isinstance(parsed, str):
            broken.append(f"CRL PEM block {number}: {parsed}")
        else:
            found.append(parsed)
    rest = certs.parse(data, fmt=fmt, cache=cache)
    if rest.error is FileReason.NO_CERTIFICATE and (found or broken):  # a CRL alone is not "no certificate"
        rest = Parsed()
    if broken and rest.error is None:
        rest = replace(rest, error=FileReason.PARSE_ERROR, detail=broken[0])
    return replace(rest, crls=tuple(found))


def _keystore(data: bytes, password: bytes | None, cache: certs.FactsCache | None) -> Parsed:
    try:
        store = keystore.read(data)
    except keystore.KeystoreError as exc:
        return Parsed(error=FileReason.PARSE_ERROR, detail=f"keystore: {exc}")
    facts: list[CertFacts] = []
    entries: list[str] = []
    problems: list[EntryProblem] = []
    for alias, chain in store.entries:
        for der in chain:
            try:
                facts.append(certs.der_facts(der, cache))
                entries.append(f"alias:{alias}")
            except certs.LOAD_ERRORS as exc:
                problems.append(EntryProblem(f"alias:{alias}", FileReason.PARSE_ERROR, certs.why(exc)))
    error, detail = None, ""
    if password is not None and not keystore.password_matches(store, password):
        error, detail = FileReason.BAD_PASSWORD, f"the {store.kind} store's digest does not match this password"
    elif not facts and not problems:
        error, detail = FileReason.NO_CERTIFICATE, f"{store.kind} store holds no certificate"
    return Parsed(
        certs=tuple(facts),
        entries=tuple(entries),
        entry_errors=tuple(problems),
        secret_keys=store.secret_keys,
        error=error,
        detail=detail,
    )


def _kubeconfig(data: bytes, *, name: str, cache: certs.FactsCache | None, read: kubeconfig.Reader) -> Parsed:
    found = kubeconfig.credentials(data, base_dir=os.path.dirname(os.path.abspath(name)), read=read)
    if isinstance(found, str):
        return Parsed(error=FileReason.PARSE_ERROR, detail=found)
    facts: list[CertFacts] = []
    entries: list[str] = []
    problems: list[EntryProblem] = []
    for credential in found:
        if credential.error is not None:
            problems.append(EntryProblem(credential.entry, credential.error, credential.detail))
            continue
        parsed = certs.parse(credential.pem, fmt="pem", cache=cache)
        facts.extend(parsed.certs)
        entries.extend(credential.entry for _ in parsed.certs)
        if parsed.error is not None:
            problems.append(EntryProblem(credential.entry, parsed.error, parsed.detail))
    followed = tuple(c.reference for c in found if c.reference)
    if not found:
        return Parsed(error=FileReason.NO_CERTIFICATE, detail="the kubeconfig names no certificate")
    return Parsed(certs=tuple(facts), entries=tuple(entries), entry_errors=tuple(problems), followed=followed)
