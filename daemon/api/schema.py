"""The one typed contract between the daemon and its clients (tray, CLI, doctor).

The daemon builds a :class:`StatusSnapshot` and sends ``snapshot.to_wire()`` (plain JSON
types) as the reply to ``status``/``subscribe`` and in every ``status`` event; a client
turns what it received back into typed objects with :func:`from_wire`, which checks every
type and raises :class:`SchemaError` naming the key path
(``endpoints[2].forwards[0].local_port: expected int or null, got string``).

Compatibility rules:

- Keys a reader does not know are ignored, so a newer daemon that adds a key still works
  with an older tray. Adding a key (with a default here) needs no version change.
- Renaming or removing a key, changing its type or adding an enum value is a new
  :data:`SCHEMA_VERSION`; a reader refuses a snapshot newer than it knows, with words
  that say to upgrade, rather than misreading it.
- A snapshot without ``version`` is version 1 (payloads from before the field existed).

Pure: no I/O; importing it is cheap (no asyncio).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
from dataclasses import dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from ..core.jsontype import json_kind
from ..core.policy import ErrorKind

__all__ = [
    "SCHEMA_VERSION",
    "CheckView",
    "Command",
    "DaemonInfo",
    "Decision",
    "EndpointView",
    "ErrorKind",
    "EventName",
    "ForwardState",
    "ForwardView",
    "MoveView",
    "RescaleJobView",
    "RescaleView",
    "SchemaError",
    "ServiceState",
    "ServiceView",
    "SourceKind",
    "SourceView",
    "StatusSnapshot",
    "TrayAction",
    "TunnelState",
    "WatchView",
    "decode",
    "from_wire",
]

SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A payload that does not match the schema; the message names the key path."""


# -- enums -----------------------------------------------------------------------------


class TunnelState(enum.StrEnum):
    """An endpoint's state as the daemon reports it: the tunnel machine's states
    (:class:`jobtunnel.daemon.core.policy.State`), plus ``paused`` (the user paused it;
    its tunnel is stopped) and ``stopped`` for an endpoint with no tunnel."""

    PENDING = "pending"
    CONNECTING = "connecting"
    UP = "up"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"
    ENDED = "ended"
    PAUSED = "paused"


class ForwardState(enum.StrEnum):
    """One forward's local port: serving, holding clients while the link is down,
    not listening, or unable to listen (``error`` says why)."""

    UP = "up"
    HELD = "held"
    CLOSED = "closed"
    ERROR = "error"


class Decision(enum.StrEnum):
    """What the user decided for an endpoint (``action`` on the wire); ``pending``: the
    endpoint waits for the user (``waiting_reason`` says why)."""

    ACTIVE = "active"
    PAUSED = "paused"
    FORGOTTEN = "forgotten"
    PENDING = "pending"


class Command(enum.StrEnum):
    """Control command names (``cmd`` on the wire)."""

    AUTH = "auth"
    HELLO = "hello"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    STATUS = "status"
    LIST = "list"
    ADD = "add"
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    FORGET = "forget"
    TRUST = "trust"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    SWITCH = "switch"
    FORWARD = "forward"
    SERVICES = "services"
    RELOAD = "reload"  # re-read the config (what SIGHUP does, where there is one)
    RESCALE_REFRESH = "rescale_refresh"


class EventName(enum.StrEnum):
    """Names of pushed events (``event`` on the wire)."""

    STATUS = "status"


class TrayAction(enum.StrEnum):
    """What a tray menu click does; the arguments each one carries are in the comments."""

    OPEN_URL = "open_url"  # (url,)
    COPY_TEXT = "copy_text"  # (text, what)
    OPEN_PUTTY = "open_putty"  # (ppk, identity_file, *putty_argv)
    OPEN_TERMINAL = "open_terminal"  # (program, arg, ...): run in a new terminal window
    RECONNECT = "reconnect"  # (name,)
    CONNECT = "connect"  # (name,)
    DISCONNECT = "disconnect"  # (name,)
    FORGET = "forget"  # (name,)
    TRUST = "trust"  # (name,) or (name, fingerprint)
    SWITCH = "switch"  # (name,)
    FORWARD = "forward"  # (name, port): forward a service discovery offered
    OPEN_FOLDER = "open_folder"  # (path,)
    ADD_JOB_LOG = "add_job_log"  # (folder,)
    PAUSE_ALL = "pause_all"
    RESUME_ALL = "resume_all"
    COPY_PUBLIC_KEY = "copy_public_key"  # (path,)
    OPEN_LOG = "open_log"  # (path,)
    EDIT_SETTINGS = "edit_settings"  # (path,)
    START_DAEMON = "start_daemon"
    STOP_DAEMON = "stop_daemon"
    QUIT = "quit"


class ServiceState(enum.StrEnum):
    """A discovered service: forwarded on a local port, offered (one click forwards it),
    or gone (it stopped listening; its forward is kept)."""

    FORWARDED = "forwarded"
    OFFERED = "offered"
    GONE = "gone"


class SourceKind(enum.StrEnum):
    """Where an endpoint (or a newer address of it) came from."""

    FILE = "file"
    USER = "user"
    RESCALE_API = "rescale-api"


# -- views -----------------------------------------------------------------------------

_V = TypeVar("_V", bound="_Wire")


class _Wire:
    """``to_wire()`` and ``from_wire()`` for the frozen dataclasses below."""

    def to_wire(self) -> dict[str, Any]:
        """Plain JSON types: dicts, lists, str, int, float, bool, None."""
        encoded = _encode(self)
        assert isinstance(encoded, dict)
        return encoded

    @classmethod
    def from_wire(cls: type[_V], obj: object) -> _V:
        """Typed from plain JSON; SchemaError (naming the key path) when it does not fit."""
        return decode(cls, obj)


@dataclass(frozen=True, kw_only=True)
class WatchView(_Wire):
    folders: tuple[str, ...]
    mode: str  # the watcher's observer, e.g. "inotify" or "polling"


@dataclass(frozen=True, kw_only=True)
class RescaleJobView(_Wire):
    """A job the Rescale API lists as not ended."""

    id: str
    name: str
    status: str  # jobStatus: Pending, Queued, Started, Executing...
    cluster: str  # clusterStatusDisplay: Not Started, Starting, Started...


@dataclass(frozen=True, kw_only=True)
class RescaleView(_Wire):
    """The Rescale API as the daemon polls it."""

    state: str  # off, starting, ok, error, stopped (a refused key: polling stopped)
    base: str | None = None  # the platform's address
    key_from: str | None = None  # where the key was found (never the key)
    checked_at: float | None = None  # epoch seconds of the last good answer
    error: str | None = None  # the last error, or why the API is off
    running: int = 0  # jobs whose cluster is starting or started
    jobs: tuple[RescaleJobView, ...] = ()

    def line(self, now: float) -> str:
        """``Rescale: 2 running jobs, checked 12 s ago``, or what is wrong."""
        if self.state in ("off", "error", "stopped"):
            return f"Rescale: {self.error or self.state}"
        if self.checked_at is None:
            return "Rescale: not asked yet"
        jobs = "1 running job" if self.running == 1 else f"{self.running} running jobs"
        return f"Rescale: {jobs}, checked {max(0, round(now - self.checked_at))} s ago"


@dataclass(frozen=True, kw_only=True)
class DaemonInfo(_Wire):
    pid: int
    version: str
    started: float  # epoch seconds
    config: str
    state_file: str
    save_error: str | None
    watch: WatchView
    summary: str
    rescale: RescaleView | None = None  # None from a daemon without the API
    # What tells the daemon of network changes and wakes ("routing socket", ...);
    # None: turned off (daemon.watch_network = false) or a daemon without the watch.
    network_watch: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ForwardView(_Wire):
    spec: str  # as the user wrote it
    dynamic: bool  # a SOCKS proxy (-D)
    bind_address: str
    local_port: int | None  # None while not listening and never assigned
    remote_host: str | None
    remote_port: int | None
    state: ForwardState
    clients: int
    error: str | None
    no_service: bool = False  # discovery found nothing listening on the remote port
    discovered: bool = False  # added for a discovered service, not from the config
    name: str | None = None  # what it serves: the config's name, else the port's ("Jupyter")
    tls: bool | None = None  # its service answered as TLS (open with https); None: not asked


@dataclass(frozen=True, kw_only=True)
class ServiceView(_Wire):
    """A service discovered on the cluster."""

    port: int  # on the cluster
    kind: str  # "jupyter", "http" or "tcp"
    title: str | None  # an HTTP page's title
    state: ServiceState
    local_port: int | None
    url: str | None  # what to open (a Jupyter's token and path included)


@dataclass(frozen=True, kw_only=True)
class SourceView(_Wire):
    kind: SourceKind
    path: str | None = None  # the file, for kind "file"
    line: int | None = None
    mtime: float | None = None  # the file's mtime when the line was read
    verified: bool = False  # a source whose word moves a job without asking


@dataclass(frozen=True, kw_only=True)
class MoveView(_Wire):
    """A newer address that a source reports for a job: switched to only on request."""

    host: str
    port: int
    source: SourceView
    seen: float  # epoch seconds
    user: str | None = None  # None from a daemon that did not send it
    notebook_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class CheckView(_Wire):
    """The last check of a link after a network change or a wake."""

    reason: str  # "network changed", "woke from sleep"
    at: float  # epoch seconds
    outcome: str  # "answered in 4 ms", "no route to the cluster; reconnecting", ...


@dataclass(frozen=True, kw_only=True)
class EndpointView(_Wire):
    name: str  # user@host:port, what commands take
    user: str
    host: str
    port: int
    job_id: str | None
    action: Decision
    state: TunnelState
    since: float  # epoch seconds
    last_error: str | None
    last_error_kind: ErrorKind | None
    reconnects: int
    bytes_sent: int
    bytes_received: int
    host_key: str | None  # SHA256 fingerprint of the current connection's host key
    source: str  # the file (or "added by the user"); source_info has the details
    line: int
    notebook_url: str | None
    forwards: tuple[ForwardView, ...]
    source_info: SourceView | None = None
    pending_move: MoveView | None = None
    waiting_reason: str | None = None  # why it waits as Decision.PENDING
    refused_key: str | None = None  # fingerprint of a refused host key (trust that one)
    services: tuple[ServiceView, ...] = ()
    ssh_alias: str | None = None  # its Host in jobtunnel's ssh_config (rescale-<jobid>)
    job_name: str | None = None  # the job's name in Rescale (from the API)
    job_url: str | None = None  # the job's page in Rescale's web app
    checked: CheckView | None = None  # why and when the link was last checked

    @property
    def job_label(self) -> str | None:
        """``the FOAM 2 (OsKBd)`` when the API named the job, else its id."""
        if self.job_name and self.job_id:
            return f"{self.job_name} ({self.job_id})"
        return self.job_id


@dataclass(frozen=True, kw_only=True)
class StatusSnapshot(_Wire):
    """The ``status`` reply: the daemon, then every endpoint not forgotten."""

    version: int = SCHEMA_VERSION
    daemon: DaemonInfo
    endpoints: tuple[EndpointView, ...]

    def endpoint(self, name: str) -> EndpointView | None:
        return next((ep for ep in self.endpoints if ep.name == name), None)


def from_wire(obj: object) -> StatusSnapshot:
    """A status snapshot from its wire form (SchemaError names what does not fit)."""
    snapshot = decode(StatusSnapshot, obj)
    if snapshot.version > SCHEMA_VERSION:
        raise SchemaError(
            f"version: the daemon sends status schema {snapshot.version}, this program "
            f"reads {SCHEMA_VERSION}; upgrade jobtunnel"
        )
    if snapshot.version < 1:
        raise SchemaError(f"version: expected 1 or more, got {snapshot.version}")
    return snapshot


# -- the codec: driven by the dataclasses' type hints, so fields and checks are one ------

_T = TypeVar("_T")


def decode(cls: type[_T], obj: object, path: str = "") -> _T:
    """``obj`` (plain JSON) as an instance of the dataclass ``cls``."""
    return _decode(cls, obj, path, nullable=False)  # type: ignore[no-any-return]


@functools.cache
def _hints(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, required) for each field of a dataclass."""
    hints = get_type_hints(cls)
    return tuple(
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if get_origin(tp) is tuple:
        return "list"
    if dataclasses.is_dataclass(tp):
        return "object"
    return {bool: "bool", int: "int", float: "number", str: "string"}.get(tp, str(tp))


def _decode(tp: Any, value: object, path: str, *, nullable: bool) -> Any:
    def wrong() -> SchemaError:
        want = _describe(tp) + (" or null" if nullable else "")
        return SchemaError(f"{path or '(top level)'}: expected {want}, got {json_kind(value)}")

    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        if len(options) != 1:
            raise TypeError(f"schema type {tp} is not supported")
        return _decode(options[0], value, path, nullable=len(options) < len(get_args(tp)))
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise wrong() from None
    if origin is tuple:
        item, *rest = get_args(tp)
        if rest != [Ellipsis]:
            raise TypeError(f"schema type {tp} is not supported")
        if not isinstance(value, list | tuple):
            raise wrong()
        return tuple(_decode(item, v, _at(path, i), nullable=False) for i, v in enumerate(value))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong()
        kwargs = {}
        for name, hint, required in _hints(tp):
            if name not in value:
                if required:
                    raise SchemaError(f"{_at(path, name)}: missing")
                continue
            kwargs[name] = _decode(hint, value[name], _at(path, name), nullable=False)
        return tp(**kwargs)
    raise TypeError(f"schema type {tp} is not supported")


def _encode(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value
