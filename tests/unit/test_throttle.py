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


def test_seen_bounds_what_one_file_can_log() -> None:
    seen = Seen(per_group=3)
    said = [seen.first("evil.log", f"10.0.0.{i}") for i in range(1000)]
    assert said[:3] == [True, True, True]
    assert said[3] is None  # one line: the rest is not logged
    assert not any(said[4:])
    assert seen.first("job.log", "10.0.0.1") is True  # other files are not silenced


def test_seen_memory_is_bounded() -> None:
    seen = Seen(limit=100, per_group=10**9)
    for i in range(10_000):
        seen.first(f"f{i % 7}.log", str(i))
    assert len(seen._keys) <= 100 and len(seen._groups) <= 100
    seen = Seen(limit=10, per_group=1)
    for i in range(1000):
        seen.first(f"f{i}.log", "x")
    assert len(seen._groups) <= 10 and len(seen._keys) <= 10
