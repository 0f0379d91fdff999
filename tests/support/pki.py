"""Certificates generated at test time with explicit validity dates, and the files they are written to."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)
ISSUING_CA = "Test Issuing CA"  # the `ca` fixture's name: an impostor takes the same one with another key


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


class PKI:
    """Issue CAs, intermediates and leaves with explicit notBefore/notAfter."""

    def issue(
        self,
        cn: str,
        *,
        issuer: Issued | None = None,
        ca: bool = False,
        sans: tuple[str, ...] = (),
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 90 * DAY,
        key_type: str = "ecdsa",
        ca_issuers: str | None = None,
    ) -> Issued:
        key = _new_key(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.cert.subject if issuer else name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        if sans:
            names: list[x509.GeneralName] = []
            for san in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if ca_issuers:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(ca_issuers),
                        )
                    ]
                ),
                critical=False,
            )
        signer = issuer.key if issuer else key
        algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return Issued(builder.sign(signer, algorithm), key)

    def ca(
        self, cn: str = "Test Root CA", *, not_after: dt.datetime = NOW + 3650 * DAY, key_type: str = "ecdsa"
    ) -> Issued:
        return self.issue(cn, ca=True, not_after=not_after, key_type=key_type)

    def leaf(
        self,
        issuer: Issued,
        cn: str = "localhost",
        *,
        sans: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 90 * DAY,
        key_type: str = "ecdsa",
        ca_issuers: str | None = None,
    ) -> Issued:
        return self.issue(
            cn,
            issuer=issuer,
            sans=sans,
            not_before=not_before,
            not_after=not_after,
            key_type=key_type,
            ca_issuers=ca_issuers,
        )


def write_pair(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write a cert/key pair the way a careful renewer does: the key, then the cert, each renamed into place."""
    for path, data in ((key_path, issued.key_pem), (cert_path, issued.cert_pem)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_chain(directory: Path, name: str, *certs: Issued, key: Issued | None = None) -> tuple[Path, Path]:
    """Write a PEM chain and the key of its first cert (or of ``key``)."""
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(b"".join(c.cert_pem for c in certs))
    key_path.write_bytes((key or certs[0]).key_pem)
    return cert_path, key_path


def pkcs12_of(leaf: Issued, password: bytes) -> bytes:
    """Return a PKCS#12 holding ``leaf`` and its key, encrypted with ``password``."""
    return pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(password)
    )


_HOUR = dt.timedelta(hours=1)
# The lifetimes of issue 28. Name: (lifetime, time left, the state `check` gives with the default bands).
LIFETIMES = {
    "160h-issued-an-hour-ago": (160 * _HOUR, 159 * _HOUR, "OK"),
    "160h-30h-left": (160 * _HOUR, 30 * _HOUR, "WARNING"),
    "160h-15h-left": (160 * _HOUR, 15 * _HOUR, "CRITICAL"),
    "45d-25-left": (45 * DAY, 25 * DAY, "OK"),
    "45d-10-left": (45 * DAY, 10 * DAY, "WARNING"),
    "90d-25-left": (90 * DAY, 25 * DAY, "OK"),
    "90d-20-left": (90 * DAY, 20 * DAY, "WARNING"),
    "398d-27-left": (398 * DAY, 27 * DAY, "WARNING"),
    "398d-6-left": (398 * DAY, 6 * DAY, "CRITICAL"),
}


def lifetime_files(directory: Path, pki: PKI, root: Issued) -> None:
    """One leaf per LIFETIMES entry, in ``<name>.pem``."""
    for name, (lifetime, left, _) in LIFETIMES.items():
        leaf = pki.leaf(root, name, not_before=NOW + left - lifetime, not_after=NOW + left)
        (directory / f"{name}.pem").write_bytes(leaf.cert_pem)
