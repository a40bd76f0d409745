"""The persisted state: round trips, atomic saves that fail cleanly, corrupt files moved
aside, and the endpoint operations (replace by job, forgotten stays forgotten, resolve)."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.process.store import (
    SCHEMA_VERSION,
    AmbiguousName,
    State,
    Store,
    StoreError,
    UnknownName,
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


def sample() -> State:
    s = State()
    s.upsert(ep("abc", url="http://1.2.3.4:8888/notebooks/x?token=t"), now=100.0)
    s.upsert(ep("def", host="5.6.7.8", port=32100), now=101.0)
    s.endpoints[("uprod_abc", "1.2.3.4", 22)].ports = {"8888": 8888, "127.0.0.1:9000:h:90": 9001}
    s.pause("def")
    return s


def test_round_trip_and_file_modes(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "state.json")
    assert len(store.load()) == 0  # no file yet: empty, not an error
    store.save(sample())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    loaded = store.load()
    assert loaded.to_dict() == sample().to_dict()
    rec = loaded.resolve("abc")
    assert rec.ports == {"8888": 8888, "127.0.0.1:9000:h:90": 9001}
    assert rec.notebook_url and rec.first_seen == 100.0
    assert loaded.resolve("def").action == "paused"
    assert json.loads(store.path.read_text())["version"] == SCHEMA_VERSION
    assert [p.name for p in store.path.parent.iterdir()] == ["state.json"]  # no temp left


def test_default_path_is_in_state_dir(isolated_home: Path) -> None:
    assert Store().path == state_file()
    assert str(state_file()).startswith(str(isolated_home))
    assert state_file().name == "state.json"


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    d = sample().to_dict()
    d["future"] = {"x": 1}
    d["endpoints"][0]["future_field"] = [1, 2]
    store.path.write_text(json.dumps(d))
    assert store.load().to_dict() == sample().to_dict()
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
    bigger.upsert(ep("ghi", host="9.9.9.9"))
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


def test_newer_endpoint_of_same_job_replaces_and_inherits() -> None:
    s = State()
    first = s.upsert(ep("abc", host="1.1.1.1", line=5), now=1.0)
    assert first.replaced is None and not first.stale
    first.record.ports["8888"] = 18888
    s.pause("abc")
    again = s.upsert(ep("abc", host="1.1.1.1", line=6), now=2.0)  # same endpoint: refresh
    assert again.replaced is None and again.record.last_seen == 2.0
    new = s.upsert(ep("abc", host="2.2.2.2", line=20), now=3.0)
    assert new.replaced is not None and new.replaced.host == "1.1.1.1"
    assert [r.host for r in s] == ["2.2.2.2"]
    assert new.record.ports == {"8888": 18888}
    assert new.record.action == "paused" and new.record.first_seen == 1.0
    # A re-scan meeting the old line again is stale: it changes nothing.
    old = s.upsert(ep("abc", host="1.1.1.1", line=5), now=4.0)
    assert old.stale and old.record.host == "2.2.2.2" and old.replaced is None
    assert [r.host for r in s] == ["2.2.2.2"]
    # Endpoints without a job id are only identified by address.
    s.upsert(Endpoint("alice", "3.3.3.3", 22, None, "x", 1))
    s.upsert(Endpoint("alice", "4.4.4.4", 22, None, "x", 2))
    assert len(s) == 3


def test_forgotten_stays_forgotten_until_added() -> None:
    s = State()
    s.upsert(ep("abc"))
    s.forget("uprod_abc@1.2.3.4:22")
    assert s.upsert(ep("abc", line=99)).record.action == "forgotten"
    # Even when its cluster restarts elsewhere: the user dropped the job.
    assert s.upsert(ep("abc", host="8.8.8.8", line=100)).record.action == "forgotten"
    added = s.add(ep("abc", host="8.8.8.8", line=100))
    assert added.record.action == "active"
    assert s.activate("abc").action == "active"
    # An explicit add of an older address wins over the re-scan rule.
    back = s.add(ep("abc", host="1.2.3.4", line=1))
    assert not back.stale and [r.host for r in s] == ["1.2.3.4"]


def test_resolve_names() -> None:
    s = State()
    s.upsert(ep("abc", host="1.2.3.4", port=22))
    s.upsert(ep("def", host="1.2.3.4", port=32100))
    s.upsert(Endpoint("bob", "h.example", 2222, None, "x", 1))
    s.upsert(Endpoint("bob", "h.example", 2223, None, "x", 2))
    s.upsert(Endpoint("carol", "::1", 2200, None, "x", 3))
    assert s.resolve("abc").port == 22
    assert s.resolve(" uprod_def ").port == 32100  # the username works too
    assert s.resolve("uprod_abc@1.2.3.4").port == 22
    assert s.resolve("uprod_def@1.2.3.4").port == 32100  # the only one at that host
    assert s.resolve("uprod_def@1.2.3.4:32100").job_id == "def"
    assert s.resolve("bob@h.example:2223").line == 2
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
    with pytest.raises(LookupError):
        s.resolve("nobody@nowhere")


def test_shared_folder_is_not_tightened(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    Store(shared / "state.json").save(sample())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "state.json").stat().st_mode) == 0o600
