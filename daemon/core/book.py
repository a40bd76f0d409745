"""The endpoint book: every endpoint the daemon knows, where it came from, what the user
decided about it and its local ports. After each event (an endpoint found, a user command,
a tunnel that ended, new limits) it answers which tunnels should exist: a :class:`Plan`.

Pure: the caller passes the time in and applies the plan; nothing here opens a file, a
socket or a timer. The rules it keeps:

- Identity is (user, host, port); a job (the id in ``uprod_<id>``) has one record.
- A file may add an endpoint, within :class:`Limits`; past a bound the endpoint waits
  with the decision ``pending`` and a reason, until the user connects it.
- A file never re-points a job that already has an endpoint: a newer address is a
  pending :class:`Move`, applied by :meth:`Book.switch` (the user) or at once when its
  source is ``verified``. Ports and decision go with the move, and only then.
- Newer means a later (file mtime, line), never the order in which files were read, so
  a restart reaches the decision the running daemon had made.
- The ports a record holds are its own: other endpoints never take them, and a
  :class:`PortLease` hands them to the tunnel and takes back what it bound.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .address import hostport
from .detect import Endpoint
from .forward import ForwardSpec
from .policy import port_candidates

__all__ = [
    "ACTIONS",
    "BY_USER",
    "SOURCE_KINDS",
    "Action",
    "AmbiguousName",
    "Book",
    "Key",
    "Limits",
    "Move",
    "NoMove",
    "Plan",
    "PortLease",
    "Record",
    "Source",
    "SourceKind",
    "UnknownName",
    "format_name",
]

Key = tuple[str, str, int]

Action = Literal["active", "paused", "forgotten", "pending"]
ACTIONS: tuple[Action, ...] = ("active", "paused", "forgotten", "pending")

SourceKind = Literal["file", "user", "rescale-api"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("file", "user", "rescale-api")

BY_USER = "added by the user"
BY_API = "the Rescale API"
# Distinct places remembered per endpoint: enough to know whether any file still names
# it, bounded so that a file copied a thousand times cannot grow a record.
MAX_SOURCES = 8
RATE_WINDOW = 60.0
# Log lines said once each; forgotten beyond this many (a flood would grow the set).
MAX_SAID = 10_000
# last_seen of a live tunnel is refreshed at most this often (each refresh is a save).
SEEN_RESOLUTION = 3600.0


class UnknownName(LookupError):
    """No endpoint matches the name the user gave."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such endpoint"


class AmbiguousName(LookupError):
    """Several endpoints match the name the user gave."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "ambiguous endpoint name"


class NoMove(LookupError):
    """``switch`` of an endpoint that has no pending move."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no pending move"


def format_name(user: str, host: str, port: int) -> str:
    """``user@host:port``; IPv6 hosts in brackets so that the port stays unambiguous."""
    return f"{user}@{hostport(host, port)}"


@dataclass(frozen=True)
class Source:
    """Where an endpoint was read: a file's line (with the file's mtime), the user, or a
    verified source (the Rescale API) whose word moves a job without asking."""

    kind: SourceKind
    path: str | None
    line: int
    mtime: float
    verified: bool = False

    @classmethod
    def file(cls, path: str, line: int, mtime: float) -> Source:
        return cls("file", path, line, mtime)

    @classmethod
    def api(cls, now: float) -> Source:
        """The Rescale API said so: verified (it moves a job without asking)."""
        return cls("rescale-api", None, 0, now, verified=True)

    @classmethod
    def user(cls, now: float, path: str | None = None, line: int = 0) -> Source:
        """The user named it (``add``), from ``path`` when they gave a file."""
        return cls("user", path, line, now)

    @property
    def order(self) -> tuple[float, int]:
        """Newer compares greater: a later mtime, then a later line."""
        return (self.mtime, self.line)

    @property
    def label(self) -> str:
        """The file, :data:`BY_USER`, or the API."""
        if self.path is not None:
            return self.path
        return BY_API if self.kind == "rescale-api" else BY_USER

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.path is not None else self.label


@dataclass(frozen=True)
class Move:
    """A newer address reported for a job that already has an endpoint."""

    user: str
    host: str
    port: int
    source: Source
    notebook_url: str | None
    seen: float

    @property
    def key(self) -> Key:
        return (self.user, self.host, self.port)

    @property
    def name(self) -> str:
        return format_name(self.user, self.host, self.port)


@dataclass
class Record:
    """One endpoint as the book keeps it (and the state file remembers it)."""

    user: str
    host: str
    port: int
    job_id: str | None
    sources: list[Source]
    notebook_url: str | None = None
    # Forward spec (as the user wrote it) -> local port once bound: sticky across
    # reconnects and restarts.
    ports: dict[str, int] = field(default_factory=dict)
    action: Action = "active"
    # The user chose the current action (add, connect, resume NAME): not counted in the
    # bounds on automatic connections.
    by_user: bool = False
    waiting_reason: str | None = None
    # The tunnel ended or gave up: not reopened at start-up until the user connects it.
    finished: str | None = None
    move: Move | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    # Ports on the cluster the user asked to forward (discovery offered them): forwarded
    # again at every start.
    chosen_ports: list[int] = field(default_factory=list)

    @property
    def key(self) -> Key:
        """Identity: (user, host, port)."""
        return (self.user, self.host, self.port)

    @property
    def name(self) -> str:
        """``user@host:port``."""
        return format_name(self.user, self.host, self.port)

    @property
    def source(self) -> Source:
        """The source that won: a verified one, else the newest naming this address."""
        return max(self.sources, key=lambda s: (s.verified, s.order))

    @property
    def verified(self) -> bool:
        """A verified source (the Rescale API) names this address."""
        return any(s.verified for s in self.sources)

    @property
    def files(self) -> list[str]:
        """Every file that named this address."""
        return [s.path for s in self.sources if s.kind == "file" and s.path is not None]

    @property
    def automatic(self) -> bool:
        """Connected because a source said so, not the user: counted in the bounds."""
        return self.action == "active" and not self.by_user and self.finished is None

    def _note_source(self, source: Source) -> None:
        same = [
            i for i, s in enumerate(self.sources) if (s.kind, s.path) == (source.kind, source.path)
        ]
        if same:
            self.sources[same[0]] = max(self.sources[same[0]], source, key=lambda s: s.order)
            return
        self.sources.append(source)
        if len(self.sources) > MAX_SOURCES:
            self.sources.remove(min(self.sources, key=lambda s: s.order))


@dataclass(frozen=True)
class Limits:
    """The bounds on what sources may do by themselves."""

    max_automatic: int = 8
    """Endpoints connected automatically at once."""
    max_per_file: int = 3
    """Of those, from any one file."""
    new_per_minute: int = 10
    """New endpoints connected automatically in any minute."""
    forget_after: float = 14 * 86400.0
    """Seconds after which a record no source names any more is dropped."""
    port_range: tuple[int, int] = (1024, 65535)
    """Where a taken port looks for another."""


@dataclass
class Plan:
    """What the driver does next, in this order: end, stop, open."""

    end: list[tuple[Key, str]] = field(default_factory=list)
    """Tunnels to end for good, with the reason."""
    stop: list[Key] = field(default_factory=list)
    """Tunnels to stop (listeners closed; the record stays)."""
    open: list[Key] = field(default_factory=list)
    """Tunnels to open (or start again)."""
    notes: list[str] = field(default_factory=list)
    """What happened, one log line each (each said once)."""

    def __bool__(self) -> bool:
        return bool(self.end or self.stop or self.open)

    def merge(self, other: Plan) -> Plan:
        self.end += other.end
        self.stop += other.stop
        self.open += [k for k in other.open if k not in self.open]
        self.notes += other.notes
        return self


class PortLease(Protocol):
    """The local ports of one endpoint, lent to its tunnel by the book."""

    def candidates(self, spec: ForwardSpec) -> Iterator[int]:
        """Ports to try binding for ``spec``, best first."""
        ...

    def bound(self, spec: ForwardSpec, port: int) -> None:
        """``spec`` now listens on ``port``: it is this endpoint's from now on."""
        ...


class _Lease:
    def __init__(self, book: Book, key: Key) -> None:
        self._book = book
        self._key = key

    def candidates(self, spec: ForwardSpec) -> Iterator[int]:
        rec = self._book.get(self._key)
        sticky = rec.ports.get(spec.spec) if rec is not None else None
        return port_candidates(
            spec.local_port,
            sticky,
            self._book.limits.port_range,
            self._book.ports_of_others(self._key),
        )

    def bound(self, spec: ForwardSpec, port: int) -> None:
        rec = self._book.get(self._key)
        # A record gone (forgotten, moved) keeps nothing: the port is free again.
        if rec is not None and rec.ports.get(spec.spec) != port:
            rec.ports[spec.spec] = port
            self._book.version += 1


class Book:
    """Every known endpoint, by identity, and the decisions about them."""

    def __init__(self, records: Iterable[Record] = (), limits: Limits | None = None) -> None:
        self._records: dict[Key, Record] = {}
        for rec in records:
            self._records[rec.key] = rec
        self.limits = limits or Limits()
        self.version = 0
        """Bumped on every change worth saving."""
        self._admitted: collections.deque[float] = collections.deque()
        self._said: set[tuple[str, ...]] = set()

    # -- reading ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: Key) -> Record | None:
        return self._records.get(key)

    def by_job(self, job_id: str) -> Record | None:
        for rec in self._records.values():
            if rec.job_id == job_id:
                return rec
        return None

    def ports_of_others(self, key: Key) -> set[int]:
        """Ports other endpoints (not forgotten) hold or will take back when they open."""
        return {
            port
            for rec in self._records.values()
            if rec.key != key and rec.action != "forgotten"
            for port in rec.ports.values()
        }

    def lease(self, key: Key) -> PortLease:
        """The ports of ``key``'s endpoint, for its tunnel."""
        return _Lease(self, key)

    def resolve(self, name: str) -> Record:
        """The endpoint a person means by ``name``.

        Accepted: a job id, a username, ``user@host:port``, ``[v6]:port`` in brackets, or
        ``user@host`` (port 22; if there is none, the only endpoint of that user and
        host). Raises :class:`UnknownName` or :class:`AmbiguousName` with words to show.
        """
        name = name.strip()
        if not name:
            raise UnknownName("no endpoint name given")
        if "@" not in name:
            matches = [r for r in self._records.values() if name in (r.job_id, r.user)]
        else:
            user, _, rest = name.partition("@")
            host, port = _split_host_port(rest)
            if port is not None:
                rec = self._records.get((user, host, port))
                matches = [rec] if rec is not None else []
            else:
                rec = self._records.get((user, host, 22))
                matches = (
                    [rec]
                    if rec is not None
                    else [r for r in self._records.values() if r.key[:2] == (user, host)]
                )
        if not matches:
            raise UnknownName(f"no known endpoint matches {name!r}")
        if len(matches) > 1:
            names = ", ".join(sorted(r.name for r in matches))
            raise AmbiguousName(f"{name!r} matches several endpoints: {names}; name one exactly")
        return matches[0]

    # -- events from sources ---------------------------------------------------------

    def found(self, ep: Endpoint, source: Source, now: float) -> Plan:
        """A source (a file, the API) names ``ep``."""
        plan = Plan()
        rec = self._records.get(ep.key)
        if rec is not None:
            confirmed = source.verified and not rec.verified
            self._refresh(rec, ep, source, now)
            if confirmed:
                plan.notes.append(f"{rec.name} (job {rec.job_id}) confirmed by {source.kind}")
            return plan
        job = self.by_job(ep.job_id) if ep.job_id else None
        if job is not None:
            return self._newer_address(job, ep, source, now)
        rec = Record(
            ep.user,
            ep.host,
            ep.port,
            ep.job_id,
            [source],
            ep.notebook_url,
            first_seen=now,
            last_seen=now,
        )
        reason = self._bound(source, now)  # before it is counted itself
        self._records[rec.key] = rec
        self.version += 1
        plan.notes.append(f"new endpoint {rec.name} (job {rec.job_id}) from {source.where}")
        if reason is None:
            self._admitted.append(now)
            plan.open.append(rec.key)
        else:
            rec.action, rec.waiting_reason = "pending", reason
            self._say(
                plan,
                ("bound", reason),
                f"{reason}: {rec.name} and later ones wait "
                "as pending (`jobtunnel connect NAME` opens one)",
            )
        return plan

    def _refresh(self, rec: Record, ep: Endpoint, source: Source, now: float) -> None:
        before = (list(rec.sources), rec.notebook_url)
        rec._note_source(source)
        rec.notebook_url = ep.notebook_url or rec.notebook_url
        rec.last_seen = now
        if (rec.sources, rec.notebook_url) != before:
            self.version += 1

    def _newer_address(self, rec: Record, ep: Endpoint, source: Source, now: float) -> Plan:
        plan = Plan()
        move = Move(ep.user, ep.host, ep.port, source, ep.notebook_url, now)
        if source.verified:
            return self._move(rec, move, f"confirmed by {source.kind}")
        if rec.verified:
            # The API's word stands: a file cannot even propose another address.
            self._say(
                plan,
                ("contradicts", move.name, source.label),
                f"{source.where}: refused {move.name}: it contradicts job {rec.job_id}'s "
                f"address {rec.name} given by {rec.source.kind}",
            )
            return plan
        if source.order <= rec.source.order:
            self._say(
                plan,
                ("older", move.name, source.label),
                f"{source.where}: ignored {move.name}: older than job {rec.job_id}'s "
                f"address {rec.name} ({rec.source.where})",
            )
            return plan
        if rec.move is not None and rec.move.key == move.key:
            if source.order > rec.move.source.order:
                rec.move = move
                self.version += 1
            return plan
        if rec.move is not None and source.order <= rec.move.source.order:
            return plan
        rec.move = move
        self.version += 1
        self._say(
            plan,
            ("move", rec.key, move.name),
            f"job {rec.job_id} reports a new address {move.name} (from {source.where}); "
            f"still on {rec.name} until `jobtunnel switch {rec.job_id}`",
        )
        return plan

    def _move(self, rec: Record, move: Move, why: str) -> Plan:
        """Re-point ``rec`` to ``move``'s address; its ports and decision go with it."""
        plan = Plan()
        old_key, old_name = rec.key, rec.name
        other = self._records.pop(move.key, None)
        if other is not None and other is not rec:
            plan.end.append((other.key, f"replaced by {rec.job_id}'s move"))
        del self._records[old_key]
        rec.user, rec.host, rec.port = move.user, move.host, move.port
        rec.sources = [move.source]
        rec.notebook_url = move.notebook_url
        rec.move = None
        rec.finished = None
        rec.last_seen = move.seen
        self._records[rec.key] = rec
        self.version += 1
        plan.end.append((old_key, f"moved to {rec.name}"))
        if rec.action == "active":
            plan.open.append(rec.key)
        plan.notes.append(f"{old_name} moved to {rec.name} ({why}); its ports go with it")
        return plan

    def _bound(self, source: Source, now: float) -> str | None:
        """Why a new endpoint from ``source`` may not connect by itself now, or None."""
        limits = self.limits
        automatic = [r for r in self._records.values() if r.automatic]
        if len(automatic) >= limits.max_automatic:
            return f"more than {limits.max_automatic} endpoints would connect automatically"
        if source.kind == "file":
            same_file = sum(1 for r in automatic if r.source.path == source.path)
            if same_file >= limits.max_per_file:
                return f"more than {limits.max_per_file} endpoints from {source.path}"
        while self._admitted and self._admitted[0] <= now - RATE_WINDOW:
            self._admitted.popleft()
        if len(self._admitted) >= limits.new_per_minute:
            return f"more than {limits.new_per_minute} new endpoints in a minute"
        return None

    def _say(self, plan: Plan, key: tuple[str | Key, ...], text: str) -> None:
        said = tuple(str(k) for k in key)
        if said in self._said:
            return
        if len(self._said) >= MAX_SAID:
            self._said.clear()
        self._said.add(said)
        plan.notes.append(text)

    # -- user commands ---------------------------------------------------------------

    def add(self, ep: Endpoint, source: Source, now: float) -> tuple[Record, Plan]:
        """The user names ``ep``: it becomes active, the job moves to it if need be."""
        rec = self._records.get(ep.key)
        job = self.by_job(ep.job_id) if ep.job_id and rec is None else None
        plan = Plan()
        if rec is not None:
            self._refresh(rec, ep, source, now)
        elif job is not None:
            plan = self._move(
                job, Move(ep.user, ep.host, ep.port, source, ep.notebook_url, now), "by the user"
            )
            rec = job
        else:
            rec = Record(
                ep.user,
                ep.host,
                ep.port,
                ep.job_id,
                [source],
                ep.notebook_url,
                first_seen=now,
                last_seen=now,
            )
            self._records[rec.key] = rec
            plan.notes.append(f"new endpoint {rec.name} (job {rec.job_id}) {BY_USER}")
        return rec, plan.merge(self.connect(rec))

    def connect(self, rec: Record) -> Plan:
        """The user wants ``rec`` open, whatever bound or ending held it back."""
        rec.action, rec.by_user = "active", True
        rec.waiting_reason = rec.finished = None
        self.version += 1
        return Plan(open=[rec.key])

    def disconnect(self, rec: Record) -> Plan:
        """Close the tunnel for now; the decision stays (it reopens at the next start)."""
        return Plan(stop=[rec.key])

    def pause(self, records: Iterable[Record]) -> Plan:
        plan = Plan()
        for rec in records:
            rec.action, rec.waiting_reason = "paused", None
            plan.stop.append(rec.key)
        self.version += 1
        return plan

    def resume(self, records: Iterable[Record]) -> Plan:
        """Paused ones become active again (as they were: the bounds count them)."""
        plan = Plan()
        for rec in records:
            if rec.action == "paused":
                rec.action = "active"
                plan.open.append(rec.key)
        self.version += 1
        return plan

    def forget(self, rec: Record) -> Plan:
        """Dropped by the user: its tunnel ends; found again, it stays forgotten."""
        rec.action, rec.waiting_reason, rec.move = "forgotten", None, None
        self.version += 1
        return Plan(end=[(rec.key, "forgotten by the user")])

    def switch(self, rec: Record) -> Plan:
        """Apply ``rec``'s pending move (the user confirmed it)."""
        if rec.move is None:
            raise NoMove(f"{rec.name} has no pending move")
        return self._move(rec, rec.move, f"switched by the user; from {rec.move.source.where}")

    # -- events from tunnels and the clock --------------------------------------------

    def ended(self, key: Key, reason: str) -> None:
        """``key``'s tunnel ended or gave up by itself: do not reopen it at start-up."""
        rec = self._records.get(key)
        if rec is not None and rec.finished != reason:
            rec.finished = reason or "ended"
            self.version += 1

    def choose_port(self, key: Key, port: int) -> bool:
        """The user forwards the cluster's ``port`` of ``key``'s endpoint; False when it
        was chosen already."""
        rec = self._records[key]
        if port in rec.chosen_ports:
            return False
        rec.chosen_ports.append(port)
        self.version += 1
        return True

    def job_ended(self, job_id: str, reason: str, now: float) -> Plan:
        """A verified source says job ``job_id`` has ended: its tunnel ends now, for good
        (no retries), and it is not reopened at start-up."""
        rec = self.by_job(job_id)
        if rec is None or rec.finished is not None or rec.action == "forgotten":
            return Plan()
        rec.finished, rec.move, rec.last_seen = reason, None, now
        self.version += 1
        return Plan(end=[(rec.key, reason)], notes=[f"{rec.name}: {reason}"])

    def seen(self, key: Key, now: float) -> None:
        """``key``'s tunnel is up: the endpoint is alive (it is not pruned)."""
        rec = self._records.get(key)
        if rec is not None and now - rec.last_seen >= SEEN_RESOLUTION:
            rec.last_seen = now
            self.version += 1

    def restore(self, now: float, file_exists: Callable[[str], bool]) -> Plan:
        """At start-up: prune, then the tunnels to reopen. Not reopened: those that ended
        or gave up, and those whose every file is gone; automatic ones newest first, up
        to the bound (the rest wait as pending)."""
        plan = Plan()
        for rec in self.prune(now, file_exists, ()):
            plan.notes.append(
                f"{rec.name}: not seen for {self.limits.forget_after / 86400:g} days; dropped"
            )
        chosen: list[Record] = []
        for rec in self._records.values():
            if rec.action != "active" or rec.finished is not None:
                continue
            files = rec.files
            if not rec.by_user and files and not any(file_exists(f) for f in files):
                self._wait(rec, "every log file that named it is gone", plan)
                continue
            chosen.append(rec)
        automatic = sorted(
            (r for r in chosen if not r.by_user), key=lambda r: r.source.order, reverse=True
        )
        for rec in automatic[self.limits.max_automatic :]:
            self._wait(
                rec,
                f"more than {self.limits.max_automatic} endpoints would connect automatically",
                plan,
            )
        keep = {r.key for r in automatic[: self.limits.max_automatic]}
        plan.open += [r.key for r in chosen if r.by_user or r.key in keep]
        return plan

    def _wait(self, rec: Record, reason: str, plan: Plan) -> None:
        rec.action, rec.waiting_reason = "pending", reason
        self.version += 1
        plan.notes.append(f"{rec.name} waits: {reason}")

    def prune(
        self, now: float, file_exists: Callable[[str], bool], live: Iterable[Key]
    ) -> list[Record]:
        """Drop records not seen for ``limits.forget_after`` (forgotten ones too) that no
        existing file names and whose tunnel is not ``live``."""
        cutoff = now - self.limits.forget_after
        keep = set(live)
        dropped = [
            rec
            for rec in self._records.values()
            if rec.last_seen < cutoff
            and rec.key not in keep
            and not any(file_exists(f) for f in rec.files)
        ]
        for rec in dropped:
            del self._records[rec.key]
        if dropped:
            self.version += 1
        return dropped


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
