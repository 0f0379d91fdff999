"""What a metric family is (``Spec``) and the label sets several families share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family: name, type, help text and label names."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]


CERT = (
    "fingerprint_sha256",
    "serial",
    "subject_cn",
    "issuer_cn",
    "key_type",
    "key_bits",
    "signature_algorithm",
    "is_ca",
    "self_signed",
)
FILE = ("path", "index", "entry")  # entry: the kubeconfig cluster/user or keystore alias, "" in a plain file
CRL = ("path", "index")  # index: the CRL's position among the file's CRLs
REVOKED = ("path", "entry", "endpoint", "server_name", "address", "index")  # a file's or a served chain's cert
ADDR = ("endpoint", "server_name", "address")
CHAIN = (*ADDR, "index")
ARI_LABELS = ("kind", "source", "serial")
