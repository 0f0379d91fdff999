"""Check a signature over bytes with a public key: what OCSP responses and fetched CRLs are verified with."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa


def signed_by(
    key: object,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
    parameters: object = None,
) -> bool:
    """Tell whether ``key`` made ``signature`` over ``data`` (RSA PKCS#1 v1.5 or PSS ``parameters``, ECDSA, EdDSA)."""
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            scheme = parameters if isinstance(parameters, padding.PSS | padding.PKCS1v15) else padding.PKCS1v15()
            key.verify(signature, data, scheme, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
