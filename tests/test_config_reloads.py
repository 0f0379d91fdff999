"""config_reloads.py: at most one config reload a second; the rest coalesced into the next, counted, never lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter.config_reloads import ConfigReloads
from tests.support import eventually


class _Clock:
    """A monotonic clock the test moves; it notes how often the reloads thread has looked at it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.looked = 0

    def __call__(self) -> float:
        if threading.current_thread().name == "config-reloads":
            self.looked += 1
        return self.now


class _Reload:
    """The reload being rate-limited: counts its calls; ``gate`` (if set) holds each call until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.gate: threading.Event | None = None

    def __call__(self) -> list[str]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(60)
        return []


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def reload() -> _Reload:
    return _Reload()


@pytest.fixture
def reloads(clock: _Clock, reload: _Reload) -> Iterator[ConfigReloads]:
    gate = ConfigReloads(reload, clock=clock)
    yield gate
    if reload.gate is not None:
        reload.gate.set()
    gate.close()


def _coalesced(reloads: ConfigReloads) -> float:
    registry = CollectorRegistry()
    registry.register(reloads)
    value = registry.get_sample_value("gunicorn_cert_exporter_config_reloads_coalesced_total")
    assert value is not None
    return value


def test_a_reload_within_a_second_is_coalesced_and_applied_when_the_second_has_passed(
    reloads: ConfigReloads, clock: _Clock, reload: _Reload
) -> None:
    assert reloads.now() == []
    clock.now += 0.5
    assert reloads.now() is None  # coalesced: POST /-/reload answers 429
    assert reloads.now() is None
    assert _coalesced(reloads) == 2
    looked = clock.looked
    eventually(lambda: clock.looked >= looked + 2, "the reloads thread to look twice")
    assert reload.calls == 1  # not before the second has passed
    clock.now += 0.5
    eventually(lambda: reload.calls == 2, "the coalesced reload applied (both requests folded into it)")
    clock.now += 5
    assert reloads.now() == []  # a second later, applied at once again
    assert reload.calls == 3


def test_a_request_while_a_reload_applies_is_coalesced_into_the_next(
    reloads: ConfigReloads, clock: _Clock, reload: _Reload
) -> None:
    reload.gate = threading.Event()
    first = threading.Thread(target=reloads.now, daemon=True)
    first.start()
    assert reload.entered.wait(30)
    clock.now += 10  # long after the last start: only the reload under way holds the next one back
    assert reloads.now() is None
    assert reload.calls == 1
    reload.gate.set()
    first.join(30)
    clock.now += 1
    eventually(lambda: reload.calls == 2, "the coalesced reload applied after the first")


def test_a_flood_of_sighups_applies_one_reload_a_second_on_one_thread(
    reloads: ConfigReloads, clock: _Clock, reload: _Reload
) -> None:
    before = threading.active_count()
    for _ in range(10_000):
        reloads.soon()  # what the SIGHUP handler calls: never blocks, never a thread per signal
    eventually(lambda: reload.calls == 1, "the first reload applied")
    assert threading.active_count() <= before + 1
    assert _coalesced(reloads) == 9_999
    clock.now += 1
    eventually(lambda: reload.calls == 2, "the coalesced signals applied as one reload")
    assert threading.active_count() <= before + 1
