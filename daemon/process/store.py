"""The daemon's persisted state: the endpoint book's records (sources, the user's
decision, sticky local ports, pending moves), in one JSON file written atomically.

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
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from .. import paths
from ..core.book import ACTIONS, SOURCE_KINDS, Action, Move, Record, Source, SourceKind
from ..files import private_dir, replace_atomically

__all__ = [
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "record_from_dict",
    "record_to_dict",
    "state_file",
]

log = logging.getLogger(__name__)

# Version 1 with the book's keys (sources, waiting_reason, finished, pending_move, by_user)
# added: optional on reading, so files written before them still load.
SCHEMA_VERSION = 1


class StoreError(Exception):
    """The state file could not be read or written; the message names the path and why."""


def state_file() -> Path:
    """Default location of the state file."""
    return paths.state_dir() / "state.json"


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


def _source_to_dict(src: Source) -> dict[str, Any]:
    return {
        "kind": src.kind,
        "path": src.path,
        "line": src.line,
        "mtime": src.mtime,
        "verified": src.verified,
    }


def _source_from_dict(d: Any) -> Source:
    if not isinstance(d, dict):
        raise _Invalid("a source is not an object")
    kind = _req(d, "kind", str)
    if kind not in SOURCE_KINDS:
        raise _Invalid(f"unknown source kind {kind!r}")
    verified = d.get("verified", False)
    if not isinstance(verified, bool):
        raise _Invalid("'verified' has the wrong type")
    return Source(
        cast(SourceKind, kind),
        _opt_str(d, "path"),
        _req(d, "line", int),
        float(_req(d, "mtime", (int, float))),
        verified,
    )


def record_to_dict(rec: Record) -> dict[str, Any]:
    """The record as saved, and as ``list --json`` shows it."""
    src = rec.source
    move = rec.move
    return {
        "name": rec.name,
        "user": rec.user,
        "host": rec.host,
        "port": rec.port,
        "job_id": rec.job_id,
        "source": src.label,
        "line": src.line,
        "source_info": _source_to_dict(src),
        "sources": [_source_to_dict(s) for s in rec.sources],
        "notebook_url": rec.notebook_url,
        "ports": dict(rec.ports),
        "action": rec.action,
        "by_user": rec.by_user,
        "waiting_reason": rec.waiting_reason,
        "finished": rec.finished,
        "pending_move": None
        if move is None
        else {
            "user": move.user,
            "host": move.host,
            "port": move.port,
            "source": _source_to_dict(move.source),
            "notebook_url": move.notebook_url,
            "seen": move.seen,
        },
        "first_seen": rec.first_seen,
        "last_seen": rec.last_seen,
        "chosen_ports": list(rec.chosen_ports),
    }


def _list(d: dict[str, Any], key: str) -> list[Any]:
    """An optional list (absent in files written before it existed)."""
    value = d.get(key, [])
    if not isinstance(value, list):
        raise _Invalid(f"{key!r} must be a list")
    return value


def record_from_dict(d: Any) -> Record:
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
    first_seen = float(_req(d, "first_seen", (int, float)))
    raw_sources = d.get("sources")
    if raw_sources is None:
        # Written before sources were kept: the one file and line, seen when first read.
        label = _req(d, "source", str)
        line = _req(d, "line", int)
        sources = [
            Source.user(first_seen)
            if label == "added by the user"
            else Source.file(label, line, first_seen)
        ]
    elif isinstance(raw_sources, list) and raw_sources:
        sources = [_source_from_dict(s) for s in raw_sources]
    else:
        raise _Invalid("'sources' must be a non-empty list")
    by_user = d.get("by_user", False)
    if not isinstance(by_user, bool):
        raise _Invalid("'by_user' has the wrong type")
    raw_move = d.get("pending_move")
    move = None
    if raw_move is not None:
        if not isinstance(raw_move, dict):
            raise _Invalid("'pending_move' is not an object")
        move = Move(
            _req(raw_move, "user", str),
            _req(raw_move, "host", str),
            _port(raw_move.get("port"), "the pending move's port"),
            _source_from_dict(raw_move.get("source")),
            _opt_str(raw_move, "notebook_url"),
            float(_req(raw_move, "seen", (int, float))),
        )
    return Record(
        user=_req(d, "user", str),
        host=_req(d, "host", str),
        port=_port(d.get("port"), "'port'"),
        job_id=_opt_str(d, "job_id"),
        sources=sources,
        notebook_url=_opt_str(d, "notebook_url"),
        ports=ports,
        action=cast(Action, action),
        by_user=by_user,
        waiting_reason=_opt_str(d, "waiting_reason"),
        finished=_opt_str(d, "finished"),
        move=move,
        first_seen=first_seen,
        last_seen=float(_req(d, "last_seen", (int, float))),
        chosen_ports=[_port(p, "a chosen port") for p in _list(d, "chosen_ports")],
    )


def _records_to_dict(records: Iterable[Record]) -> dict[str, Any]:
    recs = sorted(records, key=lambda r: r.key)
    return {"version": SCHEMA_VERSION, "endpoints": [record_to_dict(r) for r in recs]}


def _records_from_dict(d: Any) -> list[Record]:
    """Raise ValueError for anything not in this schema version."""
    if not isinstance(d, dict):
        raise _Invalid("the file is not a JSON object")
    version = d.get("version")
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise _Invalid(f"unknown schema version {version!r}")
    raw = _req(d, "endpoints", list)
    seen: set[tuple[str, str, int]] = set()
    out: list[Record] = []
    for item in raw:
        rec = record_from_dict(item)
        if rec.key in seen:
            raise _Invalid(f"{rec.name} is listed twice")
        seen.add(rec.key)
        out.append(rec)
    return out


# -- the file --------------------------------------------------------------------------


class Store:
    """Loads and atomically saves the book's records in one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else state_file()

    def load(self) -> list[Record]:
        """The saved records; none when there is no file or it was unreadable (moved
        aside)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            return _records_from_dict(json.loads(data))
        except (ValueError, RecursionError) as exc:
            # UnicodeDecodeError and JSONDecodeError are ValueErrors too.
            self._move_aside(str(exc))
            return []

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

    def save(self, records: Iterable[Record]) -> None:
        """Replace the file with ``records``: all or nothing, mode 0600, fsynced."""
        data = json.dumps(_records_to_dict(records), indent=1, sort_keys=True) + "\n"
        try:
            # A shared folder (a test or an odd setting may point at /tmp) is used as is.
            private_dir(self.path.parent)
            replace_atomically(self.path, data)
        except OSError as exc:
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or str(exc)
            raise StoreError(f"cannot save state to {self.path}: {reason}") from exc
