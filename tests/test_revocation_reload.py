"""A Gunicorn target serving a revoked leaf while its cert_file's is not: reload without waiting ``after``."""

from __future__ import annotations

from gunicorn_cert_exporter import revocation
from gunicorn_cert_exporter.targets import policy
from gunicorn_cert_exporter.vocabulary import Action
from tests.support import PKI, Issued
from tests.test_drift import T0, _state, replace_rules


def test_a_revoked_served_leaf_skips_after_but_no_other_rule(pki: PKI, root: Issued) -> None:
    state, _old, _new = _state(pki, root)
    patient = replace_rules(after=3600)  # the drift began 600 s ago
    assert policy.decide(rules=patient, state=state, signals=[], now=T0).action is Action.WAIT
    assert policy.decide(rules=patient, state=state, signals=[], now=T0, served_revoked=True).action is Action.SIGNAL
    cooling = policy.decide(rules=patient, state=state, signals=[T0 - 60], now=T0, served_revoked=True)
    assert cooling.action is Action.BLOCKED and "cooldown" in cooling.reason
    disabled = policy.decide(rules=replace_rules(enabled=False), state=state, signals=[], now=T0, served_revoked=True)
    assert disabled.action is Action.NONE


def test_only_a_revoked_served_leaf_with_an_unrevoked_cert_file_counts(pki: PKI, root: Issued) -> None:
    state, old, new = _state(pki, root)  # old is served, new is in cert_file
    assert revocation.served_leaf_revoked(state, frozenset({old.fingerprint})) is True
    assert revocation.served_leaf_revoked(state, frozenset({old.fingerprint, new.fingerprint})) is False
    assert revocation.served_leaf_revoked(state, frozenset({new.fingerprint})) is False
    assert revocation.served_leaf_revoked(state, frozenset()) is False
