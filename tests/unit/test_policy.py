"""Reconnect policy and state machine with a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobtunnel.daemon.core.policy import (
    ErrorKind,
    ReconnectPolicy,
    State,
    TunnelMachine,
    describe_error,
    port_candidates,
)

pytestmark = pytest.mark.timeout(60)


def always(x: float) -> Callable[[], float]:
    return lambda: x


def machine(rand: float = 1.0, **policy: float) -> TunnelMachine:
    return TunnelMachine(ReconnectPolicy(**policy), always(rand))


def test_first_attempt_is_immediate_then_up() -> None:
    m = machine()
    assert m.state is State.PENDING and m.next_attempt_at is None
    m.start(100.0)
    assert m.state is State.CONNECTING
    assert m.due(100.0)
    m.attempt_started(100.0)
    assert not m.due(100.0)  # one attempt at a time
    m.connected(101.0)
    assert m.state is State.UP and m.since == 101.0
    assert m.next_attempt_at is None and m.reconnects == 0


def test_backoff_doubles_to_the_cap_with_full_jitter() -> None:
    m = machine(rand=1.0, initial_delay=0.5, max_delay=30.0)
    m.start(0.0)
    now, delays = 0.0, []
    for _ in range(10):
        assert m.due(now)
        m.attempt_started(now)
        m.attempt_failed(now, ErrorKind.REFUSED)
        nxt = m.next_attempt_at
        assert nxt is not None
        delays.append(nxt - now)
        now = nxt
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    # Never-up endpoints stay "connecting"; the error is in words.
    assert m.state is State.CONNECTING
    assert "refused" in (m.last_error or "")


def test_jitter_uses_injected_randomness() -> None:
    m = machine(rand=0.25, initial_delay=2.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.attempt_failed(0.0, ErrorKind.TIMEOUT)
    assert m.next_attempt_at == pytest.approx(0.5)
    assert "Access Restriction (CIDR)" in (m.last_error or "")


@given(
    st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=40),
    st.floats(min_value=0.01, max_value=5),
    st.floats(min_value=5, max_value=100),
)
def test_delay_always_within_zero_and_cap(rands: list[float], initial: float, cap: float) -> None:
    it = iter(rands)
    m = TunnelMachine(ReconnectPolicy(initial_delay=initial, max_delay=cap), lambda: next(it))
    m.start(0.0)
    now = 0.0
    for _ in rands:
        m.attempt_started(now)
        m.attempt_failed(now, ErrorKind.REFUSED)
        nxt = m.next_attempt_at
        assert nxt is not None and now <= nxt <= now + cap
        now = nxt


def test_reconnect_counts_and_reset_after_long_uptime() -> None:
    m = machine(rand=1.0, initial_delay=1.0, max_delay=60.0, reset_after=60.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.connected(0.0)
    # Flapping: the link drops right after coming up, so backoff keeps growing.
    now = 0.0
    for expected in (1.0, 2.0, 4.0):
        m.connection_lost(now)
        assert m.state is State.RECONNECTING
        assert m.next_attempt_at == pytest.approx(now + expected)
        now = m.next_attempt_at
        m.attempt_started(now)
        m.connected(now)
    assert m.reconnects == 3
    # Up for a minute: the next drop starts again from the initial delay.
    now += 60.0
    m.connection_lost(now)
    assert m.next_attempt_at == pytest.approx(now + 1.0)


def test_auth_failure_is_failed_but_retried() -> None:
    m = machine(rand=1.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.attempt_failed(0.0, ErrorKind.AUTH, "Permission denied")
    assert m.state is State.FAILED
    assert "SSH public key" in (m.last_error or "") and "Job Settings" in (m.last_error or "")
    assert m.next_attempt_at == 0.5
    m.attempt_started(0.5)
    assert m.state is State.FAILED  # no flicker while retrying
    m.connected(1.0)
    assert m.state is State.UP and m.last_error is None


def test_host_key_change_is_not_retried_until_asked() -> None:
    m = machine()
    m.start(0.0)
    m.attempt_started(0.0)
    m.attempt_failed(0.0, ErrorKind.HOST_KEY_CHANGED, "pinned SHA256:a, server now offers SHA256:b")
    assert m.state is State.FAILED
    assert "SHA256:a" in (m.last_error or "") and "SHA256:b" in (m.last_error or "")
    assert m.next_attempt_at is None
    assert not any(m.due(t) for t in (1.0, 100.0, 10_000.0))
    m.reconnect_now(20_000.0)
    assert m.due(20_000.0)


def test_reconnect_now_skips_the_wait() -> None:
    m = machine(rand=1.0, initial_delay=10.0, max_delay=10.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.attempt_failed(0.0, ErrorKind.REFUSED)
    assert not m.due(1.0)
    m.reconnect_now(1.0)
    assert m.due(1.0)


def test_restart_replaces_an_up_link_at_once_without_an_error() -> None:
    m = machine(rand=1.0, initial_delay=10.0, max_delay=10.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.connected(0.0)
    assert m.restart(5.0) is True
    assert m.state is State.RECONNECTING and m.due(5.0)
    assert m.last_error is None
    # The old link's loss, reported afterwards, changes nothing.
    assert m.connection_lost(5.1) is False
    m.attempt_started(5.1)
    m.connected(5.2)
    assert m.state is State.UP and m.reconnects == 1
    # Not up: the same as reconnect_now, and nothing to drop.
    m.stop(6.0)
    assert m.restart(6.0) is False


def test_gives_up_after_unreachable_too_long() -> None:
    m = machine(rand=1.0, initial_delay=1.0, max_delay=100.0, give_up_after=1000.0)
    m.start(0.0)
    now = 0.0
    for _ in itertools.count():
        if not m.due(now):
            break
        m.attempt_started(now)
        m.attempt_failed(now, ErrorKind.TIMEOUT)
        if m.state is State.ENDED:
            break
        nxt = m.next_attempt_at
        assert nxt is not None
        now = nxt
        assert now < 2000
    assert m.state is State.ENDED
    assert m.next_attempt_at is None
    assert m.give_up_at is None
    assert "too long" in (m.last_error or "")


def test_give_up_clock_starts_when_the_link_drops() -> None:
    m = machine(rand=1.0, initial_delay=1.0, max_delay=1.0, give_up_after=100.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.connected(0.0)
    m.connection_lost(5000.0)  # up for a long time: not counted as unreachable
    assert m.give_up_at == 5100.0
    assert m.due(5001.0)
    m.attempt_started(5001.0)
    m.attempt_failed(5001.0, ErrorKind.REFUSED)
    assert m.state is State.RECONNECTING
    assert not m.due(5100.0)
    assert m.state is State.ENDED


def test_stop_and_resume_and_end() -> None:
    m = machine()
    m.start(0.0)
    m.attempt_started(0.0)
    m.connected(1.0)
    assert m.stop(2.0) and m.state is State.STOPPED
    assert m.next_attempt_at is None and not m.due(100.0)
    # A late outcome of an attempt that was in flight does not revive it.
    assert not m.connected(3.0) and m.state is State.STOPPED
    assert m.start(10.0) and m.state is State.CONNECTING and m.due(10.0)
    assert m.end(11.0, "job finished") and m.state is State.ENDED
    assert not m.start(12.0) and m.state is State.ENDED
    assert m.last_error == "job finished"
    with pytest.raises(RuntimeError):
        m.attempt_started(13.0)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_error_kind_has_words(kind: ErrorKind) -> None:
    text = describe_error(kind, "detail")
    assert text and "detail" in text


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(initial_delay=0)
    with pytest.raises(ValueError):
        ReconnectPolicy(initial_delay=5, max_delay=1)


def test_port_candidates_order() -> None:
    assert list(itertools.islice(port_candidates(8888, None, (1024, 65535)), 3)) == [
        8888,
        8889,
        8890,
    ]
    assert list(itertools.islice(port_candidates(8888, 9000, (1024, 65535)), 3)) == [
        9000,
        8888,
        8889,
    ]
    # Wraps around within the range, each port once.
    assert list(port_candidates(5, None, (3, 6))) == [5, 6, 3, 4]
    assert list(port_candidates(0, None, (3, 6))) == [0]
    assert list(port_candidates(0, 4000, (3, 6))) == [4000, 0]
    # A wanted port outside the range is tried, then the range.
    assert list(port_candidates(80, None, (3, 5))) == [80, 3, 4, 5]


@given(
    st.integers(1, 200),
    st.one_of(st.none(), st.integers(1, 200)),
    st.integers(1, 100),
    st.integers(0, 100),
)
def test_port_candidates_are_unique_and_cover_range(
    wanted: int, sticky: int | None, low: int, span: int
) -> None:
    high = low + span
    got = list(port_candidates(wanted, sticky, (low, high)))
    assert len(got) == len(set(got))
    assert set(range(low, high + 1)) <= set(got)
    assert got[0] == (sticky or wanted)


def test_held_client_brings_a_long_backoff_forward_but_not_a_refused_key() -> None:
    m = machine(rand=1.0, initial_delay=30.0, max_delay=30.0)
    m.start(0.0)
    m.attempt_started(0.0)
    m.connected(0.0)
    m.connection_lost(10.0)
    assert m.next_attempt_at == 40.0
    assert m.client_waiting(11.0, within=10.0)
    assert m.next_attempt_at == 21.0
    assert not m.client_waiting(12.0, within=10.0)  # already soon enough
    m.attempt_started(21.0)
    assert not m.client_waiting(21.5, within=10.0)  # one attempt at a time
    m.attempt_failed(22.0, ErrorKind.HOST_KEY_CHANGED, "x")
    assert not m.client_waiting(23.0, within=10.0)
    assert m.next_attempt_at is None
