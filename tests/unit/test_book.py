"""The endpoint book without sockets or clocks: provenance, no silent re-pointing, order by
(mtime, line), bounds, start-up, pruning, names and the port lease."""

from __future__ import annotations

import pytest
from jobtunnel.daemon.core.book import (
    AmbiguousName,
    Book,
    Limits,
    NoMove,
    Source,
    UnknownName,
)
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.core.forward import parse_forward

DAY = 86400.0


def ep(job: str = "abc", host: str = "1.2.3.4", port: int = 22, line: int = 10) -> Endpoint:
    return Endpoint(f"uprod_{job}", host, port, job, "/logs/a.log", line)


def src(path: str = "/logs/a.log", line: int = 10, mtime: float = 100.0) -> Source:
    return Source.file(path, line, mtime)


def test_a_new_endpoint_opens_and_records_where_it_came_from() -> None:
    book = Book()
    plan = book.found(ep(), src(mtime=42.0), now=1000.0)
    rec = book.resolve("abc")
    assert plan.open == [rec.key] and not plan.end
    assert rec.source == Source.file("/logs/a.log", 10, 42.0)
    assert rec.first_seen == rec.last_seen == 1000.0
    assert any("from /logs/a.log:10" in n for n in plan.notes)
    # Seen again from another file: both are kept; nothing to open again.
    again = book.found(ep(), src("/logs/b.log", 3, 50.0), now=1001.0)
    assert not again and rec.files == ["/logs/a.log", "/logs/b.log"]


def test_a_file_never_re_points_a_job_the_user_switches_and_the_ports_go_along() -> None:
    book = Book()
    book.found(ep(host="1.1.1.1"), src(mtime=100.0), now=1.0)
    rec = book.resolve("abc")
    rec.ports = {"8888": 8888}
    book.pause([rec])
    # The hijack: another file, same job, another address, newer.
    plan = book.found(ep(host="6.6.6.6"), src("/dl/evil.log", 1, 200.0), now=2.0)
    assert not plan  # no tunnel ended, none opened
    assert [r.host for r in book] == ["1.1.1.1"]
    assert rec.move is not None and rec.move.host == "6.6.6.6"
    assert rec.move.source.path == "/dl/evil.log"
    assert [n for n in plan.notes if "switch abc" in n]
    # Said once, not on every rescan.
    assert not book.found(ep(host="6.6.6.6"), src("/dl/evil.log", 1, 200.0), now=3.0).notes
    moved = book.switch(rec)
    assert moved.end == [(("uprod_abc", "1.1.1.1", 22), "moved to uprod_abc@6.6.6.6:22")]
    assert moved.open == []  # it was paused: the decision goes with it
    assert book.resolve("abc").host == "6.6.6.6" and rec.ports == {"8888": 8888}
    assert rec.move is None and rec.source.path == "/dl/evil.log"
    with pytest.raises(NoMove):
        book.switch(rec)


def test_a_verified_source_moves_at_once() -> None:
    book = Book()
    book.found(ep(host="1.1.1.1"), src(), now=1.0)
    api = Source("rescale-api", None, 0, 300.0, verified=True)
    plan = book.found(ep(host="2.2.2.2"), api, now=2.0)
    assert plan.end and plan.end[0][0] == ("uprod_abc", "1.1.1.1", 22)
    assert plan.open == [("uprod_abc", "2.2.2.2", 22)]


def test_newer_is_mtime_then_line_not_reading_order() -> None:
    # Read the newer file first, then the older one: the older address is ignored.
    book = Book()
    book.found(ep(host="2.2.2.2"), src("/logs/z.log", 1, 200.0), now=1.0)
    plan = book.found(ep(host="1.1.1.1"), src("/logs/a.log", 99, 100.0), now=2.0)
    assert not plan and book.resolve("abc").move is None
    assert [n for n in plan.notes if "older" in n]
    assert not book.found(ep(host="1.1.1.1"), src("/logs/a.log", 99, 100.0), now=3.0).notes
    # Same file and mtime: a later line is newer (a pending move), an earlier one is not.
    same = Book()
    same.found(ep(host="1.1.1.1", line=5), src(line=5), now=1.0)
    same.found(ep(host="2.2.2.2", line=3), src(line=3), now=2.0)
    assert same.resolve("abc").move is None
    same.found(ep(host="3.3.3.3", line=9), src(line=9), now=3.0)
    move = same.resolve("abc").move
    assert move is not None and move.host == "3.3.3.3"


def test_the_users_add_moves_the_job_and_wins_over_order() -> None:
    book = Book()
    book.found(ep(host="1.1.1.1"), src(), now=1.0)
    rec, plan = book.add(ep(host="2.2.2.2"), Source.user(5.0), now=5.0)
    assert rec.host == "2.2.2.2" and rec.by_user and rec.action == "active"
    assert plan.end and plan.open == [rec.key]
    # Forgotten stays forgotten when found again, until added.
    book.forget(rec)
    assert not book.found(ep(host="2.2.2.2"), src(mtime=900.0), now=6.0)
    assert rec.action == "forgotten"
    assert book.add(ep(host="2.2.2.2"), Source.user(7.0), now=7.0)[0].action == "active"


def test_bounds_per_file_total_and_rate() -> None:
    book = Book(limits=Limits(max_automatic=5, max_per_file=3, new_per_minute=4))
    opened = []
    for i in range(5):
        opened += book.found(
            Endpoint("alice", f"1.1.1.{i}", 22, None, "/a.log", i), src("/a.log", i), 10.0
        ).open
    assert len(opened) == 3
    waiting = [r for r in book if r.action == "pending"]
    assert len(waiting) == 2 and all("from /a.log" in (r.waiting_reason or "") for r in waiting)
    # Another file, same minute: the rate bound (4 a minute) stops the second one.
    first = book.found(Endpoint("bob", "2.2.2.1", 22, None, "/b.log", 1), src("/b.log"), 20.0)
    second = book.found(Endpoint("bob", "2.2.2.2", 22, None, "/b.log", 2), src("/b.log"), 21.0)
    assert first.open and not second.open
    assert "in a minute" in (book.resolve("bob@2.2.2.2").waiting_reason or "")
    # A minute later the rate allows one more, then the total bound (5) holds.
    assert book.found(Endpoint("c", "3.3.3.1", 22, None, "/c.log", 1), src("/c.log"), 90.0).open
    book.found(Endpoint("c", "3.3.3.2", 22, None, "/c.log", 2), src("/c.log"), 91.0)
    assert "connect automatically" in (book.resolve("c@3.3.3.2").waiting_reason or "")
    # `connect` opens a waiting one, bounds or not.
    rec = book.resolve("c@3.3.3.2")
    assert book.connect(rec).open == [rec.key] and rec.waiting_reason is None


def test_restore_skips_ended_gone_and_too_many_newest_first() -> None:
    book = Book(limits=Limits(max_automatic=10, max_per_file=10, new_per_minute=100))
    for i in range(4):
        book.found(Endpoint("u", f"1.1.1.{i}", 22, None, f"/f{i}", 1), src(f"/f{i}", 1, i), 1.0)
    user, _ = book.add(Endpoint("me", "9.9.9.9", 22, None, "x", 0), Source.user(1.0), 1.0)
    book.ended(("u", "1.1.1.3", 22), "unreachable for 12 h")
    later = Book(list(book), Limits(max_automatic=2))
    plan = later.restore(2.0, lambda path: path != "/f2")
    # f3 ended, f2's file is gone; of f0 and f1 both fit; the user's one always opens.
    assert sorted(plan.open) == sorted([("u", "1.1.1.0", 22), ("u", "1.1.1.1", 22), user.key])
    assert later.resolve("u@1.1.1.2").waiting_reason == "every log file that named it is gone"
    assert later.resolve("u@1.1.1.3").finished == "unreachable for 12 h"
    tight = Book(list(book), Limits(max_automatic=1))
    assert ("u", "1.1.1.1", 22) in tight.restore(2.0, lambda p: True).open  # the newest
    assert tight.resolve("u@1.1.1.0").action == "pending"


def test_prune_drops_unseen_records_forgotten_too_but_not_named_or_live() -> None:
    book = Book(limits=Limits(forget_after=14 * DAY))
    for i in range(4):
        book.found(Endpoint("u", f"1.1.1.{i}", 22, None, f"/f{i}", 1), src(f"/f{i}"), 0.0)
    book.forget(book.resolve("u@1.1.1.0"))
    dropped = book.prune(15 * DAY, lambda p: p == "/f2", live=[("u", "1.1.1.3", 22)])
    assert sorted(r.host for r in dropped) == ["1.1.1.0", "1.1.1.1"]
    assert sorted(r.host for r in book) == ["1.1.1.2", "1.1.1.3"]


def test_the_port_lease_keeps_each_endpoints_ports_its_own() -> None:
    book = Book(limits=Limits(port_range=(3, 9)))
    book.found(Endpoint("u", "1.1.1.1", 22, None, "/f", 1), src(), 0.0)
    book.found(Endpoint("u", "1.1.1.2", 22, None, "/f", 2), src(line=2), 0.0)
    first, second = (("u", "1.1.1.1", 22), ("u", "1.1.1.2", 22))
    spec = parse_forward("5")
    book.lease(second).bound(spec, 6)
    version = book.version
    assert list(book.lease(first).candidates(spec)) == [5, 7, 8, 9, 3, 4]
    book.lease(first).bound(spec, 7)
    assert book.version > version
    assert next(book.lease(first).candidates(spec)) == 7  # sticky
    book.forget(book.resolve("u@1.1.1.2"))  # a forgotten one's ports are free again
    assert 6 in list(book.lease(first).candidates(spec))


def test_resolve_names() -> None:
    s = Book()
    for e in (
        ep("abc", host="1.2.3.4", port=22),
        ep("def", host="1.2.3.4", port=32100),
        Endpoint("bob", "h.example", 2222, None, "x", 1),
        Endpoint("bob", "h.example", 2223, None, "x", 2),
        Endpoint("carol", "::1", 2200, None, "x", 3),
    ):
        s.found(e, src("x", e.line), 1.0)
    assert s.resolve("abc").port == 22
    assert s.resolve(" uprod_def ").port == 32100  # the username works too
    assert s.resolve("uprod_abc@1.2.3.4").port == 22
    assert s.resolve("uprod_def@1.2.3.4").port == 32100  # the only one at that host
    assert s.resolve("uprod_def@1.2.3.4:32100").job_id == "def"
    assert s.resolve("bob@h.example:2223").source.line == 2
    assert s.resolve("carol@[::1]:2200").user == "carol"
    assert s.resolve("carol@::1").user == "carol"
    assert s.resolve("carol@[::1]").user == "carol"
    with pytest.raises(AmbiguousName, match=r"bob@h\.example:2222, bob@h\.example:2223"):
        s.resolve("bob@h.example")
    with pytest.raises(AmbiguousName):
        s.resolve("bob")
    for bad in ("nope", "uprod_abc@1.2.3.4:23", "", "a@b:99999", "a@[::1"):
        with pytest.raises(UnknownName):
            s.resolve(bad)
