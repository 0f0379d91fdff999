"""The public half of private keys and certificates' keys: type, size, SPKI fingerprint. Pure; never the secret."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, types

from gunicorn_cert_exporter.model import KeyFacts


def key_facts(key: types.PrivateKeyTypes) -> KeyFacts:
    """Describe a private key by its public half."""
    public = key.public_key()
    key_type, key_bits = key_shape(public)
    return KeyFacts(key_type=key_type, key_bits=key_bits, spki_sha256=spki_sha256(public))


def key_shape(public: types.PublicKeyTypes) -> tuple[str, int]:
    """Return the key type and size in bits ("unknown", 0 for a type this code does not name)."""
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa", public.key_size
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ecdsa", public.key_size
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    if isinstance(public, ed448.Ed448PublicKey):
        return "ed448", 456
    if isinstance(public, dsa.DSAPublicKey):
        return "dsa", public.key_size
    return "unknown", 0


def spki(public: types.PublicKeyTypes) -> bytes:
    """Return the SubjectPublicKeyInfo of a public key, DER."""
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_sha256(public: types.PublicKeyTypes) -> str:
    """Return the SHA-256 of the SubjectPublicKeyInfo, hex."""
    return hashlib.sha256(spki(public)).hexdigest()
