"""The persisted state: round trips, atomic saves that fail cleanly, corrupt files moved
aside, files written before the book's keys. The book's rules: tests/unit/test_book.py."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.core.book import Book, Source
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.process.store import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    record_to_dict,
    state_file,
)

pytestmark = pytest.mark.timeout(20)


def ep(
    job: str = "abc",
    host: str = "1.2.3.4",
    port: int = 22,
    line: int = 10,
    source: str = "/logs/a.log",
    user: str | None = None,
    url: str | None = None,
) -> Endpoint:
    return Endpoint(user or f"uprod_{job}", host, port, job, source, line, url)


def found(book: Book, e: Endpoint, now: float = 100.0) -> None:
    book.found(e, Source.file(e.source, e.line, now - 50), now)


def sample() -> Book:
    s = Book()
    found(s, ep("abc", url="http://1.2.3.4:8888/notebooks/x?token=t"), 100.0)
    found(s, ep("def", host="5.6.7.8", port=32100), 101.0)
    s.resolve("abc").ports = {"8888": 8888, "127.0.0.1:9000:h:90": 9001}
    s.pause([s.resolve("def")])
    assert s.choose_port(s.resolve("abc").key, 47827)
    assert not s.choose_port(s.resolve("abc").key, 47827)  # once
    s.found(ep("abc", host="9.8.7.6", line=50), Source.file("/logs/b.log", 50, 99.0), 102.0)
    return s


def dump(records: Any) -> list[dict[str, Any]]:
    return [record_to_dict(r) for r in sorted(records, key=lambda r: r.key)]


def test_round_trip_and_file_modes(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "state.json")
    assert len(store.load()) == 0  # no file yet: empty, not an error
    store.save(sample())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    loaded = Book(store.load())
    assert dump(loaded) == dump(sample())
    rec = loaded.resolve("abc")
    assert rec.ports == {"8888": 8888, "127.0.0.1:9000:h:90": 9001}
    assert rec.notebook_url and rec.first_seen == 100.0
    assert rec.chosen_ports == [47827]
    assert loaded.resolve("def").action == "paused"
    assert rec.move is not None and rec.move.host == "9.8.7.6"
    assert rec.source == Source.file("/logs/a.log", 10, 50.0)
    assert json.loads(store.path.read_text())["version"] == SCHEMA_VERSION
    assert [p.name for p in store.path.parent.iterdir()] == ["state.json"]  # no temp left


def test_default_path_is_in_state_dir(isolated_home: Path) -> None:
    assert Store().path == state_file()
    assert str(state_file()).startswith(str(isolated_home))
    assert state_file().name == "state.json"


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    d = {"version": SCHEMA_VERSION, "endpoints": dump(sample())}
    d["future"] = {"x": 1}
    d["endpoints"][0]["future_field"] = [1, 2]
    store.path.write_text(json.dumps(d))
    assert dump(store.load()) == dump(sample())
    assert store.path.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"[]",
        json.dumps({"version": 99, "endpoints": []}).encode(),
        json.dumps({"endpoints": []}).encode(),
        json.dumps({"version": 1, "endpoints": [{"user": 5}]}).encode(),
        json.dumps({"version": 1, "endpoints": "x"}).encode(),
    ],
    ids=[
        "bad-json",
        "bad-utf8",
        "not-object",
        "future-version",
        "no-version",
        "bad-record",
        "bad-list",
    ],
)
def test_corrupt_file_is_moved_aside(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "state.json")
    store.path.write_bytes(content)
    (tmp_path / "known_hosts").write_text("keep me\n")
    with caplog.at_level(logging.WARNING, "jobtunnel.daemon.process.store"):
        assert len(store.load()) == 0
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert not store.path.exists()
    assert (tmp_path / "known_hosts").read_text() == "keep me\n"
    assert any("moved to state.json.corrupt-" in r.getMessage() for r in caplog.records)
    # A second corrupt file in the same second does not overwrite the first one aside.
    store.path.write_bytes(content)
    store.load()
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 2


@pytest.mark.parametrize(
    ("target", "err"),
    [
        ("write", errno.ENOSPC),
        ("fsync", errno.EIO),
        ("replace", errno.EROFS),
        ("mkstemp", errno.EACCES),
    ],
)
def test_failed_save_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, err: int
) -> None:
    store = Store(tmp_path / "state.json")
    store.save(sample())
    before = store.path.read_bytes()

    def fail(*_a: Any, **_k: Any) -> Any:
        raise OSError(err, os.strerror(err))

    if target == "mkstemp":
        monkeypatch.setattr("tempfile.mkstemp", fail)
    else:
        monkeypatch.setattr(os, target, fail)
    bigger = sample()
    found(bigger, ep("ghi", host="9.9.9.9"))
    with pytest.raises(StoreError) as info:
        store.save(bigger)
    monkeypatch.undo()
    assert str(store.path) in str(info.value)
    assert os.strerror(err) in str(info.value)
    assert store.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # temp file removed


def test_unreadable_file_is_an_error_not_corruption(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    store.path.mkdir()  # reading a directory fails with an OSError
    with pytest.raises(StoreError, match="cannot read"):
        store.load()
    assert store.path.is_dir()


def test_a_file_from_before_the_book_loads(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    old = {
        "user": "uprod_abc",
        "host": "1.2.3.4",
        "port": 22,
        "job_id": "abc",
        "source": "/logs/a.log",
        "line": 7,
        "notebook_url": None,
        "ports": {"8888": 8888},
        "action": "paused",
        "first_seen": 5.0,
        "last_seen": 6.0,
    }
    user = {**old, "user": "bob", "job_id": None, "source": "added by the user"}
    store.path.write_text(json.dumps({"version": 1, "endpoints": [old, user]}))
    a, b = store.load()
    assert a.sources == [Source.file("/logs/a.log", 7, 5.0)] and a.action == "paused"
    assert a.ports == {"8888": 8888} and a.move is None and not a.by_user
    assert b.source.kind == "user" and b.source.label == "added by the user"


def test_shared_folder_is_not_tightened(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    Store(shared / "state.json").save(sample())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "state.json").stat().st_mode) == 0o600
