"""The status schema: round trip, every malformed field named by its path, unknown keys
ignored, versions, and hypothesis over to_wire/from_wire."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.api import schema
from jobtunnel.daemon.api.schema import (
    SCHEMA_VERSION,
    DaemonInfo,
    Decision,
    EndpointView,
    ErrorKind,
    ForwardState,
    ForwardView,
    MoveView,
    SchemaError,
    ServiceState,
    ServiceView,
    SourceKind,
    SourceView,
    StatusSnapshot,
    TunnelState,
    WatchView,
    from_wire,
)
from jobtunnel.daemon.core.policy import State

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sample() -> StatusSnapshot:
    fwd = ForwardView(
        spec="8888",
        dynamic=False,
        bind_address="127.0.0.1",
        local_port=18888,
        remote_host=None,
        remote_port=8888,
        state=ForwardState.UP,
        clients=2,
        error=None,
    )
    source = SourceView(kind=SourceKind.FILE, path="/logs/a.log", line=3, mtime=1.5)
    ep = EndpointView(
        name="uprod_qpWia@3.4.5.6:22",
        user="uprod_qpWia",
        host="3.4.5.6",
        port=22,
        job_id="qpWia",
        action=Decision.ACTIVE,
        state=TunnelState.UP,
        since=1_764_000_000.0,
        last_error="Host key changed",
        last_error_kind=ErrorKind.HOST_KEY_CHANGED,
        reconnects=1,
        bytes_sent=10,
        bytes_received=20,
        host_key="SHA256:abc",
        source="/logs/a.log",
        line=3,
        notebook_url=None,
        forwards=(fwd, dataclasses.replace(fwd, local_port=None, state=ForwardState.ERROR)),
        source_info=source,
        pending_move=MoveView(host="5.6.7.8", port=22, source=source, seen=2.0),
        waiting_reason=None,
        refused_key="SHA256:new",
        services=(
            ServiceView(
                port=8888, kind="jupyter", title=None, state=ServiceState.FORWARDED,
                local_port=18888, url="http://localhost:18888/lab?token=t",
            ),
        ),
    )  # fmt: skip
    daemon = DaemonInfo(
        pid=42,
        version="0.1.0",
        started=1.0,
        config="/c.toml",
        state_file="/s.json",
        save_error=None,
        watch=WatchView(folders=("/w",), mode="inotify"),
        summary="1 tunnels up",
        network_watch=("routing socket",),
    )
    return StatusSnapshot(daemon=daemon, endpoints=(ep, dataclasses.replace(ep, name="b")))


def wire() -> dict[str, Any]:
    return json.loads(json.dumps(sample().to_wire()))  # type: ignore[no-any-return]


def test_round_trip_through_json() -> None:
    snap = sample()
    out = snap.to_wire()
    assert out["version"] == SCHEMA_VERSION == 1
    assert out["endpoints"][0]["state"] == "up" and type(out["endpoints"][0]["state"]) is str
    assert out["endpoints"][0]["last_error_kind"] == "host_key_changed"
    assert out["endpoints"][0]["forwards"][1]["local_port"] is None
    assert from_wire(json.loads(json.dumps(out))) == snap
    assert StatusSnapshot.from_wire(out) == snap
    assert snap.endpoint("b") is snap.endpoints[1] and snap.endpoint("c") is None


def test_enums_cover_what_the_daemon_reports() -> None:
    assert {s.value for s in State} <= {s.value for s in TunnelState}
    assert {"paused", "stopped"} <= set(TunnelState)
    assert set(Decision) == {"active", "paused", "forgotten", "pending"}
    assert set(ForwardState) == {"up", "held", "closed", "error"}
    assert {s.value for s in SourceKind} == {"file", "user", "rescale-api"}
    assert "switch" in set(schema.Command)


RECORDED = sorted((Path(__file__).resolve().parents[1] / "data" / "status").glob("*.json"))


def key_paths(value: Any) -> set[str]:
    return {re.sub(r"\[\d+\]", "[]", p) for p, _keys, _v in leaves(value)}


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_payloads_read_and_nothing_the_daemon_sends_is_dropped(path: Path) -> None:
    obj = json.loads(path.read_text())
    snap = from_wire(obj)
    assert from_wire(snap.to_wire()) == snap
    # Every key the real daemon sent has a field here (else the clients never see it).
    assert key_paths(obj) <= key_paths(snap.to_wire())


def test_there_are_recordings() -> None:
    assert {p.stem for p in RECORDED} >= {"empty", "up", "paused", "refused-key"}


def test_todays_payload_without_the_new_keys_parses() -> None:
    """A payload from before version, source_info, pending_move... still reads."""
    obj = wire()
    del obj["version"]
    for ep in obj["endpoints"]:
        for key in ("source_info", "pending_move", "waiting_reason", "refused_key"):
            del ep[key]
    snap = from_wire(obj)
    assert snap.version == 1
    assert snap.endpoints[0].source_info is None and snap.endpoints[0].refused_key is None


def test_unknown_keys_are_ignored_at_every_level() -> None:
    obj = wire()
    obj["future"] = {"x": 1}
    obj["daemon"]["future"] = [1]
    obj["daemon"]["watch"]["future"] = None
    obj["endpoints"][0]["future"] = "x"
    obj["endpoints"][0]["forwards"][0]["future"] = 1.5
    obj["endpoints"][0]["pending_move"]["source"]["future"] = True
    assert from_wire(obj) == sample()


def test_versions() -> None:
    obj = wire()
    obj["version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match=r"^version: .*upgrade jobtunnel"):
        from_wire(obj)
    obj["version"] = 0
    with pytest.raises(SchemaError, match=r"^version: "):
        from_wire(obj)
    obj["version"] = "1"
    with pytest.raises(SchemaError, match=r"^version: expected int, got string"):
        from_wire(obj)


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, tuple[str | int, ...], Any]]:
    """(dotted path, key sequence, value) of every key in a wire payload, inner ones too."""

    def walk(v: Any, p: str, keys: tuple[str | int, ...]) -> Iterator[Any]:
        if isinstance(v, dict):
            for k, inner in v.items():
                sub = f"{p}.{k}" if p else k
                yield sub, (*keys, k), inner
                yield from walk(inner, sub, (*keys, k))
        elif isinstance(v, list):
            for i, inner in enumerate(v):
                yield f"{p}[{i}]", (*keys, i), inner
                yield from walk(inner, f"{p}[{i}]", (*keys, i))

    yield from walk(value, path, ())


def put(obj: Any, keys: tuple[str | int, ...], value: Any) -> None:
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value


def wrong_value(value: Any) -> Any:
    """A value of another JSON kind than ``value`` (and never null)."""
    if isinstance(value, dict | list):
        return "x"
    if isinstance(value, str):
        return 5
    return "x" if value is not None else [1]


# A list's string element is named with its index, as in test_the_messages_say_what_was_expected.
ELEMENTS = ("daemon.watch.folders[0]", "daemon.network_watch[0]")
PATHS = [(p, keys, v) for p, keys, v in leaves(wire()) if p not in ELEMENTS]


@pytest.mark.parametrize(("path", "keys", "value"), PATHS, ids=[p for p, _k, _v in PATHS])
def test_every_malformed_field_is_named(path: str, keys: tuple[str | int, ...], value: Any) -> None:
    obj = wire()
    put(obj, keys, wrong_value(value))
    with pytest.raises(SchemaError) as info:
        from_wire(obj)
    assert str(info.value).startswith(f"{path}: expected "), str(info.value)


def test_the_messages_say_what_was_expected() -> None:
    cases: list[tuple[tuple[str | int, ...], Any, str]] = [
        (
            ("endpoints", 1, "forwards", 0, "local_port"),
            "18888",
            "endpoints[1].forwards[0].local_port: expected int or null, got string",
        ),
        (("endpoints", 0, "port"), True, "endpoints[0].port: expected int, got bool"),
        (("endpoints", 0, "port"), None, "endpoints[0].port: expected int, got null"),
        (("endpoints", 0, "state"), "sleeping", "endpoints[0].state: expected one of 'pending'"),
        (("endpoints", 0, "action"), "maybe", "endpoints[0].action: expected one of 'active'"),
        (
            ("endpoints", 0, "pending_move"),
            [],
            "endpoints[0].pending_move: expected object or null",
        ),
        (("daemon", "watch", "folders", 0), 7, "daemon.watch.folders[0]: expected string, got int"),
        (("daemon",), None, "daemon: expected object, got null"),
        (("endpoints",), {}, "endpoints: expected list, got object"),
    ]
    for keys, value, words in cases:
        obj = wire()
        put(obj, keys, value)
        with pytest.raises(SchemaError) as info:
            from_wire(obj)
        assert str(info.value).startswith(words), (keys, str(info.value))
    with pytest.raises(SchemaError, match=r"^\(top level\): expected object, got list"):
        from_wire([])


def test_every_required_key_is_named_when_missing() -> None:
    optional: set[str] = set()
    for path, keys, _v in leaves(wire()):
        if isinstance(keys[-1], int):
            continue
        obj = wire()
        put(obj, keys, None)
        parent: Any = obj
        for k in keys[:-1]:
            parent = parent[k]
        del parent[keys[-1]]
        try:
            from_wire(obj)
        except SchemaError as exc:
            assert str(exc) == f"{path}: missing"
        else:
            optional.add(str(keys[-1]))
    # Only the keys added after the first payload (and a source's details) may be left out;
    # a move's user and notebook_url came later too (the endpoint's own are required).
    assert optional == {
        "version", "source_info", "pending_move", "waiting_reason", "refused_key", "ssh_alias",
        "name", "path", "line", "mtime", "verified", "user", "notebook_url",
        "no_service", "discovered", "services",
        "rescale", "job_name", "job_url", "checked", "tls", "network_watch",
    }  # fmt: skip


def test_numbers() -> None:
    obj = wire()
    obj["daemon"]["started"] = 5  # an int where a float is expected: JSON does not tell
    snap = from_wire(obj)
    assert snap.daemon.started == 5.0 and type(snap.daemon.started) is float
    obj["endpoints"][0]["reconnects"] = 1.0
    with pytest.raises(SchemaError, match=r"^endpoints\[0\]\.reconnects: expected int, got number"):
        from_wire(obj)
    obj = wire()
    obj["endpoints"][0]["forwards"][0]["dynamic"] = 0
    with pytest.raises(SchemaError, match=r"dynamic: expected bool, got int"):
        from_wire(obj)


# -- hypothesis: any snapshot survives the wire; any JSON is read or refused cleanly ----

text = st.text(max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a schema type, from the same hints the codec reads."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return st.one_of(*(strategy(a) for a in get_args(tp)))
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**53), 2**53)
    if tp is float:
        return finite
    if tp is str:
        return text
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if origin is tuple:
        return st.lists(strategy(get_args(tp)[0]), max_size=3).map(tuple)
    if dataclasses.is_dataclass(tp):
        hints = schema._hints(tp)
        fields = {name: strategy(hint) for name, hint, _req in hints}
        if tp is StatusSnapshot:
            fields["version"] = st.just(SCHEMA_VERSION)
        return st.builds(tp, **fields)
    raise TypeError(tp)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(strategy(StatusSnapshot))
def test_any_snapshot_round_trips(snap: StatusSnapshot) -> None:
    assert from_wire(json.loads(json.dumps(snap.to_wire()))) == snap


@PROPERTY
@given(st.data())
def test_any_json_is_read_or_refused_with_a_schema_error(data: st.DataObject) -> None:
    obj = wire()
    paths = [keys for _p, keys, _v in leaves(obj)]
    for keys in data.draw(st.lists(st.sampled_from(paths), max_size=3)):
        # An earlier replacement may have removed this path.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            put(obj, keys, data.draw(json_values))
    try:
        snap = from_wire(obj)
    except SchemaError as exc:
        assert ": " in str(exc)
    else:
        assert from_wire(snap.to_wire()) == snap
