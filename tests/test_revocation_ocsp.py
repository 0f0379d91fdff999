"""OCSP from a responder on loopback, and /probe?...&revocation=1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.revocation_support import (
    REASON,
    Publisher,
    config,
    leaf,
    ocsp_signer,
    one,
    responder,
    rows,
    samples,
    serve,
)
from tests.support import (
    ISSUING_CA,
    PKI,
    Issued,
    TLSServer,
    eventually,
    parse_samples,
    server_context,
    start_exporter,
)


@pytest.mark.parametrize("cert_id", ["sha1", "sha256"])
def test_ocsp_good_revoked_and_unknown_from_a_responder(
    tmp_path: Path, publisher: Publisher, ca: Issued, cert_id: str
) -> None:
    url = publisher.url("/ocsp")
    good, bad, odd = (leaf(ca, f"{n}.test", ocsp_url=url) for n in ("good", "bad", "odd"))
    statuses = {good.cert.serial_number: ("good", None), bad.cert.serial_number: ("revoked", REASON)}
    publisher.route("/ocsp", responder(ca, statuses))
    exporter = serve(tmp_path, ca, ("good", good), ("bad", bad), ("odd", odd), ocsp_hash=cert_id)
    try:

        def answered() -> dict[str, float] | None:  # a pass may still be asking when scan_now returns
            found = samples(exporter, "gunicorn_cert_revoked")
            return found if sum("good.pem" in k or "bad.pem" in k for k in found) == 2 else None

        revoked = eventually(answered, "the OCSP answers for good.pem and bad.pem")
        assert (one(revoked, "good.pem"), one(revoked, "bad.pem")) == (0.0, 1.0)
        assert not [k for k in revoked if "odd.pem" in k]

        def odd_answered() -> dict[str, float] | None:
            found = samples(exporter, "gunicorn_cert_revocation_status")
            return found if any("odd.pem" in k for k in found) else None

        status = eventually(odd_answered, "the OCSP answer for odd.pem")
        assert one(status, "bad.pem", 'method="ocsp"', 'status="revoked"', 'reason="key_compromise"') == 1.0
        assert one(status, "odd.pem", 'method="ocsp"', 'status="unknown"', 'reason="unknown_to_responder"') == 1
        assert rows(exporter)["bad.test"]["band"] == "critical"
    finally:
        exporter.close()


@pytest.mark.parametrize(("signing", "expected"), [(True, 1.0), (False, None)])
def test_a_delegated_responder_needs_ocsp_signing(
    tmp_path: Path, publisher: Publisher, ca: Issued, signing: bool, expected: float | None
) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    delegate = ocsp_signer(ca, ocsp_signing=signing)
    publisher.route(
        "/ocsp", responder(ca, {bad.cert.serial_number: ("revoked", REASON)}, signer=delegate, delegate=True)
    )
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        revoked = samples(exporter, "gunicorn_cert_revoked")
        assert (one(revoked, "bad.pem") if revoked else None) == expected
        if expected is None:
            assert one(samples(exporter, "gunicorn_cert_ocsp_error"), url, 'reason="bad_signature"') == 1.0
    finally:
        exporter.close()


def test_an_ocsp_answer_signed_by_another_key_is_bad_signature(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    impostor = PKI().ca(ISSUING_CA)
    publisher.route("/ocsp", responder(ca, {bad.cert.serial_number: ("revoked", REASON)}, signer=impostor))
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        assert one(samples(exporter, "gunicorn_cert_ocsp_error"), url, 'reason="bad_signature"') == 1.0
    finally:
        exporter.close()


def test_probe_with_revocation_checks_the_targets_chain(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    publisher.route("/ocsp", responder(ca, {bad.cert.serial_number: ("revoked", REASON)}))
    server = TLSServer("127.0.0.1", context=server_context((bad, ca)))
    path = config(tmp_path)
    path.write_text(path.read_text() + 'probe: {allow: ["127.0.0.1:*"]}\n')
    exporter = start_exporter(path)
    try:
        code, plain = exporter.get(f"/probe?target={server.address}")
        assert code == 200 and b"gunicorn_cert_revoked" not in plain and publisher.asked("/ocsp") == 0
        code, body = exporter.get(f"/probe?target={server.address}&revocation=1")
        assert code == 200, body
        samples = parse_samples(body.decode())
        assert one({k: v for k, v in samples.items() if k.startswith("gunicorn_cert_revoked{")}, server.address) == 1
        assert publisher.asked("/ocsp") == 1
    finally:
        exporter.close()
        server.close()


@pytest.mark.parametrize(("fault", "reason"), [("other_serial", "cert_id_mismatch"), ("expired", "stale")])
def test_an_ocsp_answer_for_another_certid_or_past_its_window_answers_nothing(
    tmp_path: Path, publisher: Publisher, ca: Issued, fault: str, reason: str
) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    statuses = {bad.cert.serial_number: ("revoked", REASON), bad.cert.serial_number + 1: ("revoked", REASON)}
    publisher.route("/ocsp", responder(ca, statuses, other_serial=fault == "other_serial", expired=fault == "expired"))
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        assert one(samples(exporter, "gunicorn_cert_ocsp_error"), url, f'reason="{reason}"') == 1.0
    finally:
        exporter.close()


def test_probe_revocation_needs_revocation_enabled(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ocsp")
    publisher.route("/ocsp", responder(ca, {}))
    server = TLSServer("127.0.0.1", context=server_context((leaf(ca, "bad.test", ocsp_url=url), ca)))
    path = config(tmp_path, revocation={"enabled": False})
    path.write_text(path.read_text() + 'probe: {allow: ["127.0.0.1:*"]}\n')
    exporter = start_exporter(path)
    try:
        code, body = exporter.get(f"/probe?target={server.address}&revocation=1")
        assert code == 403 and b"revocation.enabled" in body
        assert publisher.connections == 0
    finally:
        exporter.close()
        server.close()
