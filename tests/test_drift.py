"""targets/drift.py and targets/policy.py: mismatch per address, when it began, and every reload safety rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from gunicorn_cert_exporter.config import ReloadConfig
from gunicorn_cert_exporter.model import (
    AddressDrift,
    AddressResult,
    EndpointResult,
    FileResult,
    MasterState,
    ProcessInfo,
    TargetState,
)
from gunicorn_cert_exporter.reasons import EndpointReason, FileReason, MasterReason
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.targets import drift, policy
from gunicorn_cert_exporter.vocabulary import Action
from tests.support import DAY, NOW, PKI, Issued

T0 = NOW.timestamp()
RULES = ReloadConfig(enabled=True, after=120, cooldown=900, max_per_hour=2)


def _file(issued: Issued, changed_at: float = T0 - 3600) -> FileResult:
    parsed = certs.parse(issued.cert_pem)
    return FileResult(path="cert.pem", certs=parsed.certs, changed_at=changed_at)


def _key(issued: Issued) -> FileResult:
    return FileResult(path="key.pem", keys=certs.parse(issued.key_pem).keys)


def _endpoint(*served: Issued) -> EndpointResult:
    addresses = tuple(
        AddressResult(address=f"127.0.0.{i + 1}", chain=certs.parse(s.cert_pem).certs) for i, s in enumerate(served)
    )
    return EndpointResult(endpoint="h:1", server_name="h", addresses=addresses)


def _state(pki: PKI, root: Issued) -> tuple[TargetState, Issued, Issued]:
    old, new = pki.leaf(root), pki.leaf(root)
    endpoint = _endpoint(old)
    worker = ProcessInfo(pid=11, ppid=10, start_time=T0 - 7200, cmdline=("gunicorn",), name="gunicorn")
    state = TargetState(
        name="api",
        cert=_file(new),
        key=_key(new),
        endpoint=endpoint,
        master=MasterState(pid=10, start_time=T0 - 9000, workers=(worker,)),
        drift=(AddressDrift("127.0.0.1", True, T0 - 600),),
        key_match=True,
    )
    return state, old, new


def test_compare_marks_each_address_and_keeps_when_drift_began(pki: PKI, root: Issued) -> None:
    old, new = pki.leaf(root), pki.leaf(root)
    file_leaf = certs.parse(new.cert_pem).certs[0]
    first = drift.compare(endpoint=_endpoint(old, new), file_leaf=file_leaf, previous=(), now=T0)
    assert first == (AddressDrift("127.0.0.1", True, T0), AddressDrift("127.0.0.2", False))
    later = drift.compare(endpoint=_endpoint(old, new), file_leaf=file_leaf, previous=first, now=T0 + 60)
    assert later[0].since == T0
    healed = drift.compare(endpoint=_endpoint(new, new), file_leaf=file_leaf, previous=later, now=T0 + 120)
    assert [d.mismatch for d in healed] == [False, False]


def test_key_match(pki: PKI, root: Issued) -> None:
    a, b = pki.leaf(root), pki.leaf(root)
    assert drift.key_match(_file(a), _key(a)) is True
    assert drift.key_match(_file(a), _key(b)) is False
    assert drift.key_match(FileResult(path="x", error=FileReason.NOT_FOUND), _key(a)) is None


def test_reload_allowed_only_when_every_rule_holds(pki: PKI, root: Issued) -> None:
    state, _, _ = _state(pki, root)
    ok = policy.decide(rules=RULES, state=state, signals=[], now=T0)
    assert ok.action is Action.SIGNAL
    assert policy.decide(rules=replace_rules(dry_run=True), state=state, signals=[], now=T0).action is Action.DRY_RUN


def replace_rules(**changes: object) -> ReloadConfig:
    return RULES.model_copy(update=changes)


Case = Callable[[TargetState, Issued, Issued], tuple[ReloadConfig, TargetState, list[float]]]
BLOCKING_CASES: dict[str, Case] = {
    "reload disabled": lambda state, _new, _expired: (replace_rules(enabled=False), state, []),
    "waiting": lambda state, _new, _expired: (replace_rules(after=3600), state, []),
    "cert_file does not parse": lambda state, _new, _expired: (
        RULES,
        replace(state, cert=FileResult(path="c", error=FileReason.EMPTY)),
        [],
    ),
    "key_file does not match": lambda state, _new, _expired: (RULES, replace(state, key_match=False), []),
    # An encrypted key (no password) or an unreadable one: the pairing is unknown, which is not a match.
    "key_file does not match cert_file": lambda state, _new, _expired: (RULES, replace(state, key_match=None), []),
    "not valid now": lambda state, _new, expired: (RULES, replace(state, cert=_file(expired), key=_key(expired)), []),
    "master not proven": lambda state, _new, _expired: (
        RULES,
        replace(state, master=MasterState(error=MasterReason.NO_PROCESS)),
        [],
    ),
    "workers already restarted": lambda state, new, _expired: (
        RULES,
        replace(state, cert=_file(new, changed_at=T0 - 9999)),
        [],
    ),
    "USR2 upgrade in progress": lambda state, _new, _expired: (
        RULES,
        replace(state, master=replace(state.master, successor=12)),
        [],
    ),
    "cooldown": lambda state, _new, _expired: (RULES, state, [T0 - 60]),
    "max_per_hour": lambda state, _new, _expired: (replace_rules(cooldown=0), state, [T0 - 1000, T0 - 2000]),
}


@pytest.mark.parametrize("expected", list(BLOCKING_CASES))
def test_each_safety_rule_blocks_the_reload(pki: PKI, root: Issued, expected: str) -> None:
    state, _, new = _state(pki, root)
    expired = pki.leaf(root, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    rules, case, signals = BLOCKING_CASES[expected](state, new, expired)
    decision = policy.decide(rules=rules, state=case, signals=signals, now=T0)
    assert decision.action is not Action.SIGNAL
    assert expected in decision.reason


def test_an_endpoint_that_served_nothing_is_drift_unknown_not_no_drift(pki: PKI, root: Issued) -> None:
    """The decision's wording must not say "no drift" when nothing could be compared (refused, timeout)."""
    state, _, _ = _state(pki, root)
    refused = EndpointResult(
        endpoint="h:1",
        server_name="h",
        addresses=(AddressResult(address="127.0.0.1", error=EndpointReason.REFUSED),),
    )
    unknown = replace(state, endpoint=refused, drift=(AddressDrift("127.0.0.1", False),))
    decision = policy.decide(rules=RULES, state=unknown, signals=[], now=T0)
    assert decision.action is Action.NONE and decision.reason.startswith("drift unknown")
    in_sync = replace(state, drift=(AddressDrift("127.0.0.1", False),))
    assert policy.decide(rules=RULES, state=in_sync, signals=[], now=T0).reason == "no drift"
