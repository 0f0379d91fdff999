"""status_runbook.py: what the workers can read, the key's exposure and the previous leaf on the page, API, check."""

from __future__ import annotations

from gunicorn_cert_exporter import check, status
from gunicorn_cert_exporter.bands import Severity
from gunicorn_cert_exporter.model import (
    AddressDrift,
    AddressResult,
    EndpointResult,
    FileResult,
    MasterState,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.runbook import FileAccess, PreviousLeaf, WorkerAccess
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.sources.access import Access
from gunicorn_cert_exporter.web import status_page
from tests.support import Issued

DENIED = "uid 65534 gid 65534 can't read /etc/tls/key.pem (0:0 -rw-------)"


def _target(root: Issued, access: WorkerAccess | None) -> TargetState:
    leaf = certs.parse(root.cert_pem).certs[0]
    return TargetState(  # in sync, paired, master up: the runbook is the row's only finding
        name="api",
        key_match=True,
        cert=FileResult(path="/etc/tls/cert.pem", certs=(leaf,)),
        key=FileResult(path="/etc/tls/key.pem"),
        endpoint=EndpointResult(
            endpoint="127.0.0.1:8443", server_name="", addresses=(AddressResult(address="127.0.0.1", chain=(leaf,)),)
        ),
        drift=(AddressDrift(address="127.0.0.1", mismatch=False),),
        master=MasterState(pid=10, start_time=1.0),
        access=access,
        previous_leaves=(PreviousLeaf("ab" * 32, 2_000_000_000.0, 1_700_000_000.0),),
    )


def _access(key: Access, *, exposed: bool) -> WorkerAccess:
    files = (
        FileAccess("cert", "/etc/tls/cert.pem", Access.READABLE),
        FileAccess("key", "/etc/tls/key.pem", key, DENIED if key is Access.DENIED else ""),
    )
    return WorkerAccess(uid=65534, gid=65534, groups=(65534,), source="worker 11", files=files, key_exposed=exposed)


def test_workers_that_cant_read_the_key_are_critical_on_the_page_the_api_and_check(root: Issued) -> None:
    view = status.build(Snapshot(targets=(_target(root, _access(Access.DENIED, exposed=False)),)), now=0.0)
    row = view.targets[0]
    assert row.severity is Severity.CRITICAL
    assert row.problems == (f"workers (uid 65534 gid 65534) can't read key_file /etc/tls/key.pem: {DENIED}",)
    rows = check.rows(view)
    assert check.verdict(rows) is Severity.CRITICAL and "/etc/tls/key.pem" in rows[0].note
    runbook = status.document(view)["targets"][0]["runbook"]  # type: ignore[index]
    assert (runbook["uid"], runbook["gid"], runbook["identity_source"]) == (65534, 65534, "worker 11")
    assert runbook["access"][1] == {"file": "key", "path": "/etc/tls/key.pem", "access": "denied", "detail": DENIED}
    assert runbook["previous_leaves"][0]["fingerprint_sha256"] == "ab" * 32
    page = status_page.render_view(view)
    assert "uid 65534 gid 65534 (worker 11)" in page and "key: denied" in page and "previous leaf abababab" in page


def test_an_exposed_key_is_a_warning_and_unknown_access_is_unknown(root: Issued) -> None:
    exposed = status.build(Snapshot(targets=(_target(root, _access(Access.READABLE, exposed=True)),)), now=0.0)
    assert exposed.targets[0].severity is Severity.WARNING
    assert "key_file is readable or writable by others" in exposed.targets[0].problems[0]
    unknown = status.build(Snapshot(targets=(_target(root, _access(Access.UNKNOWN, exposed=False)),)), now=0.0)
    assert unknown.targets[0].severity is Severity.UNKNOWN
    unseen = status.build(Snapshot(targets=(_target(root, None),)), now=0.0)
    assert unseen.targets[0].severity is Severity.OK and unseen.targets[0].runbook.uid is None
