"""The daemon's persisted state: every known endpoint, its sticky local ports and the
user's decision about it, in one JSON file written atomically.

Pinned host keys are not here: they live in the known_hosts file of
:mod:`jobtunnel.daemon.engine.hostkeys` in the same directory.

A file that cannot be read as this schema is moved aside (never silently overwritten) and
the daemon starts empty; a file written by a newer jobtunnel counts as unreadable, but
unknown extra keys inside a known version are ignored so that additions stay compatible.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from .. import paths
from ..core.detect import Endpoint
from ..files import private_dir, replace_atomically

__all__ = [
    "ACTIONS",
    "SCHEMA_VERSION",
    "Action",
    "AmbiguousName",
    "EndpointRecord",
    "State",
    "Store",
    "StoreError",
    "UnknownName",
    "Upserted",
    "format_name",
    "state_file",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

Action = Literal["active", "paused", "forgotten"]
ACTIONS: tuple[Action, ...] = ("active", "paused", "forgotten")

Key = tuple[str, str, int]


class StoreError(Exception):
    """The state file could not be read or written; the message names the path and why."""


class UnknownName(LookupError):
    """No endpoint matches the name the user gave."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such endpoint"


class AmbiguousName(LookupError):
    """Several endpoints match the name the user gave."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "ambiguous endpoint name"


def state_file() -> Path:
    """Default location of the state file."""
    return paths.state_dir() / "state.json"


def format_name(user: str, host: str, port: int) -> str:
    """``user@host:port``; IPv6 hosts in brackets so that the port stays unambiguous."""
    shown = f"[{host}]" if ":" in host else host
    return f"{user}@{shown}:{port}"


# -- records ---------------------------------------------------------------------------


class _Invalid(ValueError):
    pass


def _req(d: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in d:
        raise _Invalid(f"missing {name!r}")
    value = d[name]
    # bool is an int subclass: a port of `true` is a type error, not port 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _Invalid(f"{name!r} has the wrong type")
    if not isinstance(value, kind):
        raise _Invalid(f"{name!r} has the wrong type")
    return value


def _opt_str(d: dict[str, Any], name: str) -> str | None:
    value = d.get(name)
    if value is not None and not isinstance(value, str):
        raise _Invalid(f"{name!r} has the wrong type")
    return value


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _Invalid(f"{what} is not a port number")
    return value


@dataclass
class EndpointRecord:
    """One endpoint as remembered across restarts."""

    user: str
    host: str
    port: int
    job_id: str | None
    source: str
    line: int
    notebook_url: str | None = None
    # Forward spec (as the user wrote it) -> local port once assigned; kept so that the
    # same spec gets the same local port after a restart or reconnect.
    ports: dict[str, int] = field(default_factory=dict)
    action: Action = "active"
    first_seen: float = 0.0
    last_seen: float = 0.0

    @property
    def key(self) -> Key:
        """Identity: (user, host, port)."""
        return (self.user, self.host, self.port)

    @property
    def name(self) -> str:
        """``user@host:port``."""
        return format_name(self.user, self.host, self.port)

    @classmethod
    def from_endpoint(cls, ep: Endpoint, now: float) -> EndpointRecord:
        return cls(
            user=ep.user,
            host=ep.host,
            port=ep.port,
            job_id=ep.job_id,
            source=ep.source,
            line=ep.line,
            notebook_url=ep.notebook_url,
            first_seen=now,
            last_seen=now,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "job_id": self.job_id,
            "source": self.source,
            "line": self.line,
            "notebook_url": self.notebook_url,
            "ports": dict(self.ports),
            "action": self.action,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_dict(cls, d: Any) -> EndpointRecord:
        """Raise ValueError on wrong types; keys it does not know are ignored."""
        if not isinstance(d, dict):
            raise _Invalid("an endpoint is not an object")
        ports_raw = _req(d, "ports", dict)
        ports: dict[str, int] = {}
        for spec, local in ports_raw.items():
            ports[spec] = _port(local, f"the local port of {spec!r}")
        action = _req(d, "action", str)
        if action not in ACTIONS:
            raise _Invalid(f"unknown action {action!r}")
        line = _req(d, "line", int)
        return cls(
            user=_req(d, "user", str),
            host=_req(d, "host", str),
            port=_port(d.get("port"), "'port'"),
            job_id=_opt_str(d, "job_id"),
            source=_req(d, "source", str),
            line=line,
            notebook_url=_opt_str(d, "notebook_url"),
            ports=ports,
            action=cast(Action, action),
            first_seen=float(_req(d, "first_seen", (int, float))),
            last_seen=float(_req(d, "last_seen", (int, float))),
        )


class Upserted(NamedTuple):
    """What :meth:`State.upsert` did."""

    record: EndpointRecord
    """The record now current for the endpoint's job (or identity)."""
    replaced: EndpointRecord | None
    """The older endpoint of the same job that was dropped, if any."""
    stale: bool
    """True when the endpoint was older than the one already known for its job and so
    ignored; ``record`` is then the newer, known one."""


@dataclass
class State:
    """Every known endpoint, by identity (user, host, port)."""

    endpoints: dict[Key, EndpointRecord] = field(default_factory=dict)

    def __iter__(self) -> Iterator[EndpointRecord]:
        return iter(self.endpoints.values())

    def __len__(self) -> int:
        return len(self.endpoints)

    def get(self, key: Key) -> EndpointRecord | None:
        return self.endpoints.get(key)

    def by_job(self, job_id: str) -> EndpointRecord | None:
        for rec in self.endpoints.values():
            if rec.job_id == job_id:
                return rec
        return None

    def upsert(self, ep: Endpoint, now: float | None = None) -> Upserted:
        """Record a detected endpoint.

        A known endpoint keeps its ports, first-seen time and the user's action (so a
        forgotten one stays forgotten). A new endpoint for a job already known under
        another address replaces it and inherits its ports and action: the user decided
        about the job, and its restarted cluster should reappear on the same local ports.
        An endpoint from an earlier line of the same file than the known one for its job
        is stale (a re-scan) and changes nothing.
        """
        now = time.time() if now is None else now
        known = self.endpoints.get(ep.key)
        if known is not None:
            same_job = self.by_job(ep.job_id) if ep.job_id else None
            replaced = None
            if same_job is not None and same_job is not known:
                # The address was reused by its own job after a detour: keep one per job.
                replaced = self.endpoints.pop(same_job.key)
            known.job_id = ep.job_id
            known.source, known.line = ep.source, ep.line
            known.notebook_url = ep.notebook_url or known.notebook_url
            known.last_seen = now
            return Upserted(known, replaced, False)
        older = self.by_job(ep.job_id) if ep.job_id else None
        if older is not None and older.source == ep.source and older.line > ep.line:
            return Upserted(older, None, True)
        rec = EndpointRecord.from_endpoint(ep, now)
        if older is not None:
            del self.endpoints[older.key]
            rec.ports = dict(older.ports)
            rec.action = older.action
            rec.first_seen = older.first_seen
        self.endpoints[rec.key] = rec
        return Upserted(rec, older, False)

    def add(self, ep: Endpoint, now: float | None = None) -> Upserted:
        """The user's explicit add: like :meth:`upsert`, and the endpoint becomes active."""
        done = self.upsert(ep, now)
        if done.stale:
            # The user named this endpoint explicitly: it wins over the re-scan rule.
            del self.endpoints[done.record.key]
            rec = EndpointRecord.from_endpoint(ep, time.time() if now is None else now)
            rec.ports, rec.first_seen = dict(done.record.ports), done.record.first_seen
            self.endpoints[rec.key] = rec
            done = Upserted(rec, done.record, False)
        done.record.action = "active"
        return done

    def set_action(self, name: str, action: Action) -> EndpointRecord:
        """Mark the endpoint named (see :meth:`resolve`) active, paused or forgotten."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        rec = self.resolve(name)
        rec.action = action
        return rec

    def forget(self, name: str) -> EndpointRecord:
        return self.set_action(name, "forgotten")

    def pause(self, name: str) -> EndpointRecord:
        return self.set_action(name, "paused")

    def activate(self, name: str) -> EndpointRecord:
        return self.set_action(name, "active")

    def remove(self, key: Key) -> EndpointRecord | None:
        """Drop an endpoint entirely (it is then new if detected again)."""
        return self.endpoints.pop(key, None)

    def ports_in_use(self) -> set[int]:
        """Local ports assigned to any endpoint, forgotten ones included."""
        return {p for rec in self.endpoints.values() for p in rec.ports.values()}

    def resolve(self, name: str) -> EndpointRecord:
        """The endpoint a person means by ``name``.

        Accepted: a job id, a username, ``user@host:port``, ``[v6]:port`` in brackets, or
        ``user@host`` (port 22; if there is none, the only endpoint of that user and
        host). Raises :class:`UnknownName` or :class:`AmbiguousName` with words to show.
        """
        name = name.strip()
        if not name:
            raise UnknownName("no endpoint name given")
        if "@" not in name:
            matches = [r for r in self if name in (r.job_id, r.user)]
        else:
            user, _, rest = name.partition("@")
            host, port = _split_host_port(rest)
            if port is not None:
                rec = self.endpoints.get((user, host, port))
                matches = [rec] if rec is not None else []
            else:
                rec = self.endpoints.get((user, host, 22))
                matches = (
                    [rec] if rec is not None else [r for r in self if r.key[:2] == (user, host)]
                )
        if not matches:
            raise UnknownName(f"no known endpoint matches {name!r}")
        if len(matches) > 1:
            names = ", ".join(sorted(r.name for r in matches))
            raise AmbiguousName(f"{name!r} matches several endpoints: {names}; name one exactly")
        return matches[0]

    def to_dict(self) -> dict[str, Any]:
        recs = sorted(self.endpoints.values(), key=lambda r: r.key)
        return {"version": SCHEMA_VERSION, "endpoints": [r.to_dict() for r in recs]}

    @classmethod
    def from_dict(cls, d: Any) -> State:
        """Raise ValueError for anything not in this schema version."""
        if not isinstance(d, dict):
            raise _Invalid("the file is not a JSON object")
        version = d.get("version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise _Invalid(f"unknown schema version {version!r}")
        raw = _req(d, "endpoints", list)
        state = cls()
        for item in raw:
            rec = EndpointRecord.from_dict(item)
            if rec.key in state.endpoints:
                raise _Invalid(f"{rec.name} is listed twice")
            state.endpoints[rec.key] = rec
        return state

    def copy(self) -> State:
        return State({k: replace(r, ports=dict(r.ports)) for k, r in self.endpoints.items()})


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep:
            raise UnknownName(f"unclosed '[' in {text!r}")
        if not tail:
            return host, None
        if not tail.startswith(":"):
            raise UnknownName(f"expected ':port' after ']' in {text!r}")
        return host, _parse_port(tail[1:], text)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _parse_port(port, text)
    # No colon, or a bare IPv6 address (which cannot carry a port without brackets).
    return text, None


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UnknownName(f"{text!r} in {whole!r} is not a port number")
    return int(text)


# -- the file --------------------------------------------------------------------------


class Store:
    """Loads and atomically saves the :class:`State` in one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else state_file()

    def load(self) -> State:
        """The saved state; empty when there is none or it was unreadable (moved aside)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            return State.from_dict(json.loads(data))
        except (ValueError, RecursionError) as exc:
            # UnicodeDecodeError and JSONDecodeError are ValueErrors too.
            self._move_aside(str(exc))
            return State()

    def _move_aside(self, why: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            # Starting empty would overwrite the only copy on the next save.
            raise StoreError(
                f"{self.path} is unreadable ({why}) and cannot be moved aside: "
                f"{exc.strerror or exc}"
            ) from exc
        log.warning(
            "state file %s is unreadable (%s); moved to %s, starting empty",
            self.path,
            why,
            aside.name,
        )

    def save(self, state: State) -> None:
        """Replace the file with ``state``: all or nothing, mode 0600, fsynced."""
        data = json.dumps(state.to_dict(), indent=1, sort_keys=True) + "\n"
        try:
            # A shared folder (a test or an odd setting may point at /tmp) is used as is.
            private_dir(self.path.parent)
            replace_atomically(self.path, data)
        except OSError as exc:
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or str(exc)
            raise StoreError(f"cannot save state to {self.path}: {reason}") from exc
