"""Which repeated events get a log line (core/throttle.py), with the time passed in."""

from __future__ import annotations

from jobtunnel.daemon.core.throttle import Repeats, Seen


def test_repeats_logs_each_new_message_and_the_same_one_once_per_interval() -> None:
    r = Repeats(interval=60)
    assert r.check(0, "refused") == 0
    assert [r.check(t, "refused") for t in (1, 2, 59)] == [None, None, None]
    assert r.check(60, "refused") == 3  # three held back since the last line
    assert r.check(61, "timeout") == 0  # a new error is news at once
    assert r.check(62, "refused") == 0  # and so is the old one again
    assert r.check(63, "refused") is None


def test_repeats_after_reset_logs_the_first_failure_again() -> None:
    r = Repeats(interval=600)
    assert r.check(0, "refused") == 0
    assert r.check(1, "refused") is None
    r.reset()
    assert r.check(2, "refused") == 0


def test_seen_logs_a_thing_once() -> None:
    seen = Seen()
    assert seen.first("a.log", "x: private") is True
    assert seen.first("a.log", "x: private") is False
    assert seen.first("b.log", "x: private") is True  # another file says it too


def test_seen_memory_is_bounded() -> None:
    seen = Seen(limit=100)
    for i in range(10_000):
        seen.first(f"f{i % 7}.log", str(i))
    assert len(seen._keys) == 100
    assert seen.first("f0.log", "9996") is False  # the newest are kept
    assert seen.first("f0.log", "0") is True  # the oldest were forgotten
