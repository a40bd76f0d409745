"""The config file: one TOML file, every key optional, every error named by file, line, key.

The schema below is the single source of truth: it gives each key's type, default, the
check that its value must pass and the comment that ``jobtunnel config init`` writes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .core.address import parse_user_hostport
from .core.detect import DEFAULT_USERNAME_PATTERN
from .core.forward import parse_dynamic, parse_forward
from .core.policy import ReconnectPolicy, reconnect_problem
from .core.rescale import PLATFORMS, base_url, base_url_problem

__all__ = [
    "Config",
    "ConfigError",
    "Problem",
    "default_config_text",
    "load_config",
    "render_toml",
]

Check = Callable[[Any], str | None]


def _key(default: Any, doc: str, kind: type | tuple[type, type], check: Check | None = None) -> Any:
    """Declare one config key: default, comment for ``config init``, type, and check.

    A check returns None for a good value, else the sentence that says what is allowed.
    """
    meta = {"doc": doc, "kind": kind, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# Longest time any key may say (about 31 years): beyond it, timers and the scheduler
# overflow (inf and 1e308 are valid TOML floats).
MAX_SECONDS = 1e9


def _at_least(low: float) -> Check:
    return lambda v: (
        None if low <= v <= MAX_SECONDS else f"must be a number >= {low} (and at most 1e9)"
    )


def _above(low: float) -> Check:
    return lambda v: (
        None if low < v <= MAX_SECONDS else f"must be a number > {low} (and at most 1e9)"
    )


def _between(low: int, high: int) -> Check:
    return lambda v: None if low <= v <= high else f"must be a whole number from {low} to {high}"


def _regex(value: str) -> str | None:
    try:
        compiled = re.compile(value)
    except (re.error, OverflowError, RecursionError) as exc:
        return f"not a valid regular expression ({exc})"
    if compiled.groups:
        return "capture groups are not allowed (use (?:...))"
    return None


def _each(check: Callable[[Any], object]) -> Check:
    def run(values: list[Any]) -> str | None:
        for item in values:
            try:
                check(item)
            except ValueError as exc:
                return str(exc)
        return None

    return run


def _discover_interval(value: float) -> str | None:
    return None if value == 0 or 5 <= value <= MAX_SECONDS else "must be 0 (off) or >= 5 seconds"


SERVICE_KINDS = ("jupyter", "http", "tcp")


def _service_kinds(values: list[str]) -> str | None:
    unknown = [v for v in values if v not in SERVICE_KINDS]
    return f"unknown kind(s) {unknown}; known: {', '.join(SERVICE_KINDS)}" if unknown else None


FORWARD_NAME_MAX = 40


def _forward_entries(values: list[Any]) -> str | None:
    """``tunnels.forwards``: specs, or tables ``{spec = "...", name = "..."}``."""
    for number, item in enumerate(values, start=1):
        if isinstance(item, dict):
            extra = sorted(item.keys() - {"spec", "name"})
            if extra or not isinstance(item.get("spec"), str):
                return f"entry {number}: a table has spec (a string) and name only"
            name = item.get("name", "")
            if not isinstance(name, str) or len(name) > FORWARD_NAME_MAX:
                return f"entry {number}: name must be a string of at most {FORWARD_NAME_MAX}"
            if any(not c.isprintable() for c in name):
                return f"entry {number}: name must be printable (no control characters)"
            item = item["spec"]
        try:
            parse_forward(item)
        except ValueError as exc:
            return f"entry {number}: {exc}" if len(values) > 1 else str(exc)
    return None


def _nonempty_strings(values: list[str]) -> str | None:
    if not all(v.strip() for v in values):
        return "must be non-empty strings"
    if any("\0" in v for v in values):
        return "must not contain NUL characters"
    return None


def _address(value: str) -> str | None:
    if value == "localhost":
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address such as 127.0.0.1 or ::1, or localhost ('' is not allowed)"
    return None


def _port_range(values: list[int]) -> str | None:
    if len(values) != 2 or not 1 <= values[0] <= values[1] <= 65535:
        return "must be [low, high] with 1 <= low <= high <= 65535"
    return None


def _proxy_jump(value: str) -> str | None:
    if not value:
        return None
    try:
        parse_user_hostport(value)
    except ValueError as exc:
        return str(exc)
    return None


def _event_loop(value: str) -> str | None:
    return (
        None if value in ("auto", "uvloop", "asyncio") else 'must be "auto", "uvloop" or "asyncio"'
    )


def _control(value: str) -> str | None:
    return None if value in ("auto", "unix", "tcp") else 'must be "auto", "unix" or "tcp"'


def _ciphers(values: list[str]) -> str | None:
    if not values or not all(values):
        return "must be a non-empty list of cipher names"
    # Imported here: only a config that names ciphers pays for loading asyncssh.
    from asyncssh.encryption import get_encryption_algs

    known = {alg.decode("ascii") for alg in get_encryption_algs()}
    unknown = [v for v in values if v not in known]
    if unknown:
        return f"unknown cipher(s) {', '.join(unknown)}; supported: {', '.join(sorted(known))}"
    return None


# aes128-gcm first: measured fastest with asyncssh here (see design notes); the tunnel
# engine's default too.
DEFAULT_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)


@dataclass(frozen=True)
class DetectConfig:
    """How endpoints are recognised in job logs."""

    username_pattern: str = _key(
        DEFAULT_USERNAME_PATTERN,
        "Regular expression a job username must match (Rescale: u<letters>prod_<jobid>).",
        str,
        _regex,
    )
    allow_private_addresses: bool = _key(
        False,
        "Accept private, loopback and link-local addresses (tests, on-premise clusters).",
        bool,
    )


@dataclass(frozen=True)
class WatchConfig:
    """Which folders of downloaded job logs the daemon watches."""

    folders: list[str] = _key(
        ["~/JobLogs"],
        "Folders of job logs to watch (created on first run).",
        list,
        _nonempty_strings,
    )
    patterns: list[str] = _key(
        ["*.log", "*.txt", "*.tsv", "*.csv", "*.out", "*.html"],
        "File name patterns to read; partial downloads (.crdownload, .part) are always skipped.",
        list,
        _nonempty_strings,
    )
    recursive: bool = _key(False, "Also watch sub-folders.", bool)


@dataclass(frozen=True)
class SshConfig:
    """How jobtunnel connects to a cluster."""

    identity_files: list[str] = _key(
        [],
        "Private keys to offer; empty: jobtunnel's own key, then ~/.ssh/id_*.",
        list,
        _nonempty_strings,
    )
    keepalive_interval: float = _key(
        5,
        "Seconds between keepalives; 0 turns them off (a dead link then goes unnoticed).",
        (int, float),
        _at_least(0),
    )
    keepalive_count_max: int = _key(
        2, "Unanswered keepalives before the link counts as dead.", int, _between(1, 1000)
    )
    connect_timeout: float = _key(
        15, "Seconds to wait for a connection and its login.", (int, float), _at_least(1)
    )
    ciphers: list[str] = _key(
        list(DEFAULT_CIPHERS),
        "Cipher preference, fastest first (measured on loopback).",
        list,
        _ciphers,
    )
    use_ssh_config: bool = _key(
        True,
        "Take IdentityFile and IdentityAgent from ~/.ssh/config for matching hosts "
        "(never its Hostname, Port, User, proxies or forwards).",
        bool,
    )
    proxy_jump: str = _key(
        "",
        "user@host:port of a bastion to reach clusters through; empty: connect directly.",
        str,
        _proxy_jump,
    )


@dataclass(frozen=True)
class TunnelsConfig:
    """Which ports are forwarded to every cluster, and how."""

    forwards: list[str] = _key(
        ["8888"],
        'OpenSSH -L specs "[bind_address:]port:host:hostport", or a bare "PORT"; '
        'or tables {spec="6006", name="TensorBoard"} to name one.',
        list,
        _forward_entries,
    )
    dynamic_forwards: list[str] = _key(
        [], 'SOCKS5 proxies as with ssh -D: "[bind_address:]port".', list, _each(parse_dynamic)
    )
    bind_address: str = _key(
        "127.0.0.1",
        "Local address to listen on; only loopback unless you change it.",
        str,
        _address,
    )
    hold_seconds: float = _key(
        30,
        "Seconds a client waits while the link is down before it is closed.",
        (int, float),
        _at_least(0),
    )
    port_range: list[int] = _key(
        [1024, 65535],
        "Where to look for the next free local port when one is taken.",
        list,
        _port_range,
    )
    max_automatic: int = _key(
        8,
        "Endpoints connected automatically at once (newest first); more wait as pending.",
        int,
        _between(0, 10000),
    )
    max_per_file: int = _key(
        3,
        "Of those, from any one log file; more wait as pending (`jobtunnel connect`).",
        int,
        _between(0, 10000),
    )
    new_per_minute: int = _key(
        10,
        "New endpoints connected automatically in any minute; more wait as pending.",
        int,
        _between(0, 100000),
    )
    discover_interval: float = _key(
        30,
        "Seconds between looks at what a cluster serves (its listening ports, Jupyter's "
        "runtime files), over the tunnel's own connection; 0 turns discovery off.",
        (int, float),
        _discover_interval,
    )
    auto_forward: list[str] = _key(
        ["jupyter"],
        'Kinds of discovered services forwarded by themselves ("jupyter", "http", "tcp"); '
        "others are offered in the tray and by `jobtunnel forward NAME PORT`.",
        list,
        _service_kinds,
    )
    # Not a key of its own: the names that tables in ``forwards`` give (spec -> name).
    forward_names: dict[str, str] = field(
        default_factory=dict, metadata={"internal": True, "kind": dict, "doc": "", "check": None}
    )


@dataclass(frozen=True)
class ReconnectConfig:
    """When to retry a lost cluster, and when to give up."""

    # The defaults are ReconnectPolicy's (core cannot import this module).
    initial_delay: float = _key(
        ReconnectPolicy.initial_delay,
        "Seconds before the first retry (exponential backoff, full jitter).",
        (int, float),
        _above(0),
    )
    max_delay: float = _key(
        ReconnectPolicy.max_delay,
        "Longest wait between retries, seconds.",
        (int, float),
        _at_least(0),
    )
    reset_after: float = _key(
        ReconnectPolicy.reset_after,
        "A link up this long resets the backoff, seconds.",
        (int, float),
        _at_least(0),
    )
    give_up_after: float = _key(
        ReconnectPolicy.give_up_after,
        "A cluster unreachable this long counts as ended, seconds (12 h).",
        (int, float),
        _above(0),
    )


@dataclass(frozen=True)
class DaemonConfig:
    """The daemon process itself."""

    event_loop: str = _key(
        "auto", '"auto" (uvloop where installed), "uvloop" or "asyncio".', str, _event_loop
    )
    control: str = _key(
        "auto",
        'Control API transport: "unix" socket, "tcp" on loopback with a token file, '
        'or "auto" (unix where available).',
        str,
        _control,
    )
    probe_interval: float = _key(
        10,
        "Seconds between health probes (and checks for a clock jump after sleep).",
        (int, float),
        _at_least(1),
    )
    watch_network: bool = _key(
        True,
        "Check every link the moment the network changes or the machine wakes "
        "(netlink, the routing socket or Windows' notices; D-Bus for sleep).",
        bool,
    )
    rescan_interval: float = _key(
        60, "Seconds between safety re-scans of the watched folders.", (int, float), _at_least(1)
    )
    snapshot_interval: float = _key(
        300,
        "Seconds between state snapshots (changes are also saved at once).",
        (int, float),
        _at_least(1),
    )
    forget_after_days: float = _key(
        14,
        "Endpoints that no log names any more are dropped after this many days unseen.",
        (int, float),
        _at_least(0),
    )


def _platform(value: str) -> str | None:
    try:
        base_url(value)
    except ValueError as exc:
        return str(exc).partition("; ")[2] or str(exc)
    return None


def _api_url(value: str) -> str | None:
    return None if not value else base_url_problem(value)


def _profile(value: str) -> str | None:
    if not value:
        return None
    if not value.strip() or any(c in value for c in "[]\n\0"):
        return "must be a profile name of the Rescale CLI's apiconfig, such as default"
    return None


@dataclass(frozen=True)
class RescaleConfig:
    """The Rescale API as a verified source of endpoints (`jobtunnel rescale login`)."""

    enabled: bool = _key(
        True, "Ask the Rescale API for your jobs' clusters when a key is set.", bool
    )
    profile: str = _key(
        "",
        "Read the key from this profile of the Rescale CLI's ~/.config/rescale/apiconfig "
        "at each start (no copy is made); empty: the key of `jobtunnel rescale login`, "
        "else RESCALE_API_KEY.",
        str,
        _profile,
    )
    platform: str = _key(
        "us",
        "Rescale platform: " + ", ".join(PLATFORMS) + " (or its host name).",
        str,
        _platform,
    )
    url: str = _key(
        "", "API address instead of platform, e.g. https://platform.rescale.com.", str, _api_url
    )
    slow_interval: float = _key(
        60, "Seconds between polls while no job is starting.", (int, float), _at_least(10)
    )
    fast_interval: float = _key(
        10,
        "Seconds between polls while a job waits for its cluster.",
        (int, float),
        _at_least(5),
    )
    hide_ended_after: float = _key(
        3600,
        "Seconds a job the API saw end stays in the tray menu.",
        (int, float),
        _at_least(0),
    )


@dataclass(frozen=True)
class Config:
    """The whole config; ``Config()`` is every default."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    tunnels: TunnelsConfig = field(default_factory=TunnelsConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    rescale: RescaleConfig = field(default_factory=RescaleConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Section -> key -> value, as the file would say it."""
        return {name: _keys_of(getattr(self, name)) for name in _SECTION}


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file."""

    file: Path
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


_SECTION: dict[str, type] = {
    "detect": DetectConfig,
    "watch": WatchConfig,
    "ssh": SshConfig,
    "tunnels": TunnelsConfig,
    "reconnect": ReconnectConfig,
    "daemon": DaemonConfig,
    "rescale": RescaleConfig,
}

_TYPE_WORDS = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
}


def _key_lines(text: str) -> dict[str, int]:
    """Map ``section.key`` (and ``section``) to the line that sets it.

    tomllib keeps no positions, so this re-reads the lines; it needs to understand only
    the plain ``[table]`` / ``key = value`` shape a config file has.
    """
    lines: dict[str, int] = {}
    table = ""
    header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(?:#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+?)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            table = m.group(1).replace('"', "").replace("'", "").strip()
            lines.setdefault(table, number)
        elif m := assign.match(line):
            key = m.group(1).replace('"', "").replace("'", "")
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


_ITEM_WORDS = {int: "whole numbers", str: "strings", dict: "tables"}


def _kind_ok(value: Any, kind: type | tuple[type, type]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, but `port = true` is a mistake, not a number.
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _item_kinds(section: str, name: str) -> tuple[type, ...]:
    """The element types of list keys."""
    if (section, name) == ("tunnels", "forwards"):
        return (str, dict)
    return (int,) if (section, name) == ("tunnels", "port_range") else (str,)


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The keys a section takes (not the internal fields derived from them)."""
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _keys_of(section: Any) -> dict[str, Any]:
    """A section's keys and values as the file says them (a named forward as its table)."""
    values = {name: dataclasses.asdict(section)[name] for name in _fields(type(section))}
    if isinstance(section, TunnelsConfig):
        names = section.forward_names
        values["forwards"] = [
            {"spec": f, "name": names[f]} if f in names else f for f in section.forwards
        ]
    return values


def validate(data: dict[str, Any], file: Path, text: str = "") -> Config:
    """Check parsed TOML against the schema; raise ConfigError naming every problem."""
    lines = _key_lines(text)
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTION:
            allowed = ", ".join(f"[{s}]" for s in _SECTION)
            problems.append(
                Problem(file, lines.get(name), name, f"unknown section; allowed: {allowed}")
            )
            continue
        if not isinstance(value, dict):
            problems.append(Problem(file, lines.get(name), name, "must be a [table]"))
            continue
        cls = _SECTION[name]
        known = _fields(cls)
        values: dict[str, Any] = {}
        for key, item in value.items():
            dotted = f"{name}.{key}"
            line = lines.get(dotted)
            spec = known.get(key)
            if spec is None:
                allowed = ", ".join(known)
                problems.append(
                    Problem(file, line, dotted, f"unknown key; allowed in [{name}]: {allowed}")
                )
                continue
            kind = spec.metadata["kind"]
            if not _kind_ok(item, kind):
                words = " or ".join(
                    _TYPE_WORDS[k] for k in (kind if isinstance(kind, tuple) else (kind,))
                )
                problems.append(Problem(file, line, dotted, f"must be {words}, not {item!r}"))
                continue
            if kind is list:
                item_kinds = _item_kinds(name, key)
                if not all(any(_kind_ok(v, k) for k in item_kinds) for v in item):
                    words = " or ".join(_ITEM_WORDS[k] for k in item_kinds)
                    problems.append(Problem(file, line, dotted, f"must be a list of {words}"))
                    continue
            check: Check | None = spec.metadata["check"]
            if check is not None and (why := check(item)) is not None:
                problems.append(Problem(file, line, dotted, f"bad value {item!r}: {why}"))
                continue
            values[key] = item
        if name == "tunnels" and "forwards" in values:
            entries = values["forwards"]
            values["forwards"] = [e["spec"] if isinstance(e, dict) else e for e in entries]
            values["forward_names"] = {
                e["spec"]: e["name"] for e in entries if isinstance(e, dict) and e.get("name")
            }
        section = cls(**values)
        if isinstance(section, ReconnectConfig):
            # Rules across keys (max_delay >= initial_delay), ReconnectPolicy's own.
            bad = reconnect_problem(
                section.initial_delay,
                section.max_delay,
                section.reset_after,
                section.give_up_after,
            )
            if bad is not None:
                dotted = f"{name}.{bad[0]}"
                line = lines.get(dotted, lines.get(name))
                problems.append(Problem(file, line, dotted, bad[1]))
        sections[name] = section
    if problems:
        raise ConfigError(problems)
    return Config(**sections)


def load_config(path: Path | None = None) -> tuple[Config, Path]:
    """Read the config at ``path`` (default: paths.config_file()); missing means defaults."""
    file = path if path is not None else paths.config_file()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if path is not None:
            raise ConfigError([Problem(file, None, None, "no such file")]) from None
        return Config(), file
    except OSError as exc:
        raise ConfigError([Problem(file, None, None, f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(file, bad_line, None, "not UTF-8 text")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(m.group(1)) if m else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([Problem(file, line, None, f"not valid TOML: {message}")]) from None
    return validate(data, file, text), file


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # Single-quoted literal strings keep regular expressions readable.
        return f"'{value}'" if "'" not in value and "\n" not in value else _basic_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _basic_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_toml(config: Config, *, commented: bool = False) -> str:
    """The config as TOML; ``commented`` writes every key as a documented, disabled default."""
    out: list[str] = []
    if commented:
        out += [
            "# jobtunnel configuration. Every key is optional: a commented line shows the",
            "# default. Uncomment and edit; `jobtunnel config check` validates the file.",
            "",
        ]
    for name, cls in _SECTION.items():
        section = getattr(config, name)
        out.append(f"[{name}]")
        if commented and cls.__doc__:
            out.append(f"# {cls.__doc__.strip()}")
        values = _keys_of(section)
        for spec in _fields(cls).values():
            line = f"{spec.name} = {_toml_value(values[spec.name])}"
            if commented:
                out.append(f"# {spec.metadata['doc']}")
                out.append(f"# {line}")
            else:
                out.append(line)
        out.append("")
    return "\n".join(out)


def default_config_text() -> str:
    """What ``jobtunnel config init`` writes."""
    return render_toml(Config(), commented=True)
