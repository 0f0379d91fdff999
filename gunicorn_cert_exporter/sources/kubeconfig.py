"""Kubeconfigs: the certificates of every cluster and user, embedded or referenced. Pure: files come through a reader.

Only ``certificate-authority(-data)`` and ``client-certificate(-data)`` are looked at. Keys, tokens, passwords,
``exec`` and ``auth-provider`` plugins are never read into a value (the YAML parser sees them, nothing keeps
them), never run, and the cluster is never contacted. References are resolved as kubectl does: a relative path
is relative to the kubeconfig's own directory.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import yaml

from gunicorn_cert_exporter.reasons import FileReason

_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_KIND_CONFIG = re.compile(rb"^[\"']?kind[\"']?\s*:\s*[\"']?Config[\"']?\s*,?\s*$", re.MULTILINE)
_FIELDS = (
    ("clusters", "cluster", "certificate-authority"),
    ("users", "user", "client-certificate"),
)

Reader = Callable[[str], "bytes | tuple[FileReason, str]"]
"""Read a referenced file under the scan's bounds: its bytes, or the reason and a detail."""


@dataclass(frozen=True, slots=True)
class Credential:
    """The PEM of one cluster's CA or one user's client certificate, or why it could not be had."""

    entry: str  # "cluster:prod", "user:kubernetes-admin"
    pem: bytes = b""
    reference: str = ""  # the resolved path, when the entry names a file
    error: FileReason | None = None
    detail: str = ""


def looks_like_kubeconfig(data: bytes) -> bool:
    """Tell a kubeconfig by a top-level ``kind: Config`` line (YAML or JSON), before parsing anything."""
    return _KIND_CONFIG.search(data) is not None


def credentials(data: bytes, *, base_dir: str, read: Reader) -> list[Credential] | str:
    """Return each cluster's and user's certificate PEM, or say why the whole file is no kubeconfig."""
    try:
        document = yaml.load(data, Loader=_SAFE_LOADER)  # noqa: S506  (a SafeLoader: no object construction)
    except yaml.YAMLError as exc:
        return f"not valid YAML ({str(exc).splitlines()[0][:160]})"
    if not isinstance(document, dict) or document.get("kind") != "Config":
        return "not a kubeconfig (a mapping with kind: Config)"
    return [_credential(entry, body, key, base_dir=base_dir, read=read) for entry, body, key in _named(document)]


def _named(document: dict[object, object]) -> Iterator[tuple[str, dict[object, object], str]]:
    for section, inner, key in _FIELDS:
        items = document.get(section)
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            body = item.get(inner)
            name = item.get("name")
            if isinstance(body, dict) and (key in body or f"{key}-data" in body):
                yield f"{inner}:{name if isinstance(name, str) else '?'}", body, key


def _credential(entry: str, body: dict[object, object], key: str, *, base_dir: str, read: Reader) -> Credential:
    embedded = body.get(f"{key}-data")
    if embedded is not None:  # kubectl prefers the data over the file when both are set
        if not isinstance(embedded, str):
            return Credential(entry, error=FileReason.PARSE_ERROR, detail=f"{key}-data is not a string")
        try:
            return Credential(entry, pem=base64.b64decode("".join(embedded.split()), validate=True))
        except (binascii.Error, ValueError) as exc:
            return Credential(entry, error=FileReason.PARSE_ERROR, detail=f"{key}-data is not base64 ({exc})")
    reference = body.get(key)
    if not isinstance(reference, str) or not reference:
        return Credential(entry, error=FileReason.PARSE_ERROR, detail=f"{key} is not a path")
    path = os.path.join(base_dir, reference)  # an absolute reference stays as it is
    found = read(path)
    if isinstance(found, tuple):
        return Credential(entry, reference=path, error=found[0], detail=f"{path}: {found[1]}")
    return Credential(entry, pem=found, reference=path)
