"""An OpenSSH client config for every live cluster: endpoints in, ``ssh_config`` text out.

With it, ``ssh rescale-qpWia``, ``scp``, ``rsync`` and VS Code Remote-SSH reach a cluster
with jobtunnel's key and jobtunnel's pinned host key, without asking anything. Each block
is ``Host <alias>``, the endpoint's ``HostName``/``Port``/``User``, the identity files
with ``IdentitiesOnly yes``, and host-key checking only against jobtunnel's pins (an
exported known_hosts keyed by the alias: ``HostKeyAlias``, ``StrictHostKeyChecking yes``).

Aliases: ``rescale-<jobid>`` for a job's endpoint; without a job id (a username that is not
``u*prod_<id>``, or an endpoint added by hand) ``rescale-<user>-<host>-<port>`` with every
character outside ``A-Za-z0-9._-`` turned into ``-``. ``Host`` patterns match
with case (``ssh rescale-qpWia``, as ``status`` shows it) but known_hosts names do not, so
aliases are unique without case: a later endpoint whose alias is taken gets the long
form, and a number after it if that is taken too. ``rescale-bastion`` is never a
cluster's (a job whose id is ``bastion`` gets the long form).

With a bastion (``ssh.proxy_jump``) one more block, ``Host rescale-bastion``, is written
like the others (its pin under that alias in the same known_hosts), and every cluster
block gets ``ProxyJump rescale-bastion``, as the daemon's own links go through it. A
bastion whose values fail the same checks gets no block, no block uses ProxyJump, and the
reason is in ``refused``.

The user and host come from untrusted log files. They are written only when every
character is on a short allow-list (letters, digits and ``._-``, plus ``:`` in a host for
IPv6), so no value can end a line, start a comment, split into two words or carry a ``%``
token; anything else is refused (the endpoint gets no block, and the reason is returned).
Paths (ours) are double-quoted with ``\\`` and ``"`` escaped and ``%`` doubled. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "BASTION_ALIAS",
    "Cluster",
    "Export",
    "Settings",
    "aliases",
    "export",
    "host_problem",
    "problem",
    "quote",
    "user_problem",
]

PREFIX = "rescale-"
BASTION_ALIAS = PREFIX + "bastion"
HEADER = (
    "# Written by the jobtunnel daemon: one Host block per live cluster. Do not edit; it is\n"
    "# rewritten whenever endpoints change. Include it from ~/.ssh/config with\n"
    "# `jobtunnel ssh-config --install`.\n"
)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9:][A-Za-z0-9.:-]{0,252}")
_UNSAFE_ALIAS = re.compile(r"[^A-Za-z0-9._-]+")
_KEY_TYPE = re.compile(r"[A-Za-z0-9@.-]{1,64}")
_KEY_DATA = re.compile(r"[A-Za-z0-9+/]+={0,2}")

Key = tuple[str, str, int]


@dataclass(frozen=True)
class Cluster:
    """One endpoint as the config needs it."""

    user: str
    host: str
    port: int
    job_id: str | None = None

    @property
    def key(self) -> Key:
        return (self.user, self.host, self.port)


@dataclass(frozen=True)
class Settings:
    """What every block shares: the keys to offer, where the exported pins are, and the
    bastion to jump through (None: connect directly)."""

    identity_files: tuple[str, ...]
    known_hosts: str
    bastion: Cluster | None = None


@dataclass(frozen=True)
class Export:
    """The two files, and the endpoints left out with the reason (the bastion too, if its
    values were refused: then no block goes through it)."""

    config: str
    known_hosts: str
    refused: tuple[tuple[Cluster, str], ...]


def user_problem(user: str) -> str | None:
    """Why ``user`` cannot be written into an ssh_config (None: it can)."""
    if _USER.fullmatch(user):
        return None
    return "the username may hold only letters, digits and ._- (and not start with . or -)"


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be written into an ssh_config (None: it can)."""
    if _HOST.fullmatch(host):
        return None
    return "the host may hold only letters, digits and .:- (and not start with . or -)"


def problem(cluster: Cluster) -> str | None:
    """Why ``cluster`` gets no block (None: it gets one)."""
    if not 1 <= cluster.port <= 65535:
        return f"port {cluster.port} is outside 1-65535"
    return user_problem(cluster.user) or host_problem(cluster.host)


def _sanitised(text: str) -> str:
    return _UNSAFE_ALIAS.sub("-", text).strip("-.") or "x"


def _long_alias(cluster: Cluster) -> str:
    return PREFIX + _sanitised(f"{cluster.user}-{cluster.host}-{cluster.port}")


def aliases(clusters: Iterable[Cluster]) -> dict[Key, str]:
    """Each cluster's alias, unique without case; first come, first served (clusters
    with a :func:`problem` get none). :data:`BASTION_ALIAS` is kept for the bastion, with
    or without one, so that an alias does not change with the config."""
    taken: set[str] = {BASTION_ALIAS.lower()}
    result: dict[Key, str] = {}
    for cluster in clusters:
        if cluster.key in result or problem(cluster) is not None:
            continue
        wanted = [_long_alias(cluster)]
        if cluster.job_id:
            wanted.insert(0, PREFIX + _sanitised(cluster.job_id))
        chosen = next((a for a in wanted if a.lower() not in taken), None)
        n = 2
        while chosen is None:
            candidate = f"{wanted[-1]}-{n}"
            chosen = candidate if candidate.lower() not in taken else None
            n += 1
        taken.add(chosen.lower())
        result[cluster.key] = chosen
    return result


def quote(value: str) -> str:
    """``value`` as one ssh_config word that OpenSSH reads back unchanged (``%`` doubled
    for the keywords that expand tokens). ValueError for what no quoting can hold."""
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"{value!r} holds a line break or NUL")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def _pin_line(alias: str, key_text: str) -> str | None:
    parts = key_text.split()
    if len(parts) != 2 or not _KEY_TYPE.fullmatch(parts[0]) or not _KEY_DATA.fullmatch(parts[1]):
        return None
    return f"{alias} {parts[0]} {parts[1]}"


def _block(cluster: Cluster, alias: str, settings: Settings, jump: bool, what: str = "") -> str:
    # Only checked values (user, host, port) and the sanitised alias reach the file;
    # even a comment line would end at a line break in a job id.
    lines = [
        f"# {what}{cluster.user}@{cluster.host}:{cluster.port}",
        f"Host {alias}",
        f"    HostName {cluster.host}",
        f"    Port {cluster.port}",
        f"    User {cluster.user}",
        *(f"    IdentityFile {quote(path)}" for path in settings.identity_files),
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {quote(settings.known_hosts)}",
        "    GlobalKnownHostsFile none",
        f"    HostKeyAlias {alias}",
        "    StrictHostKeyChecking yes",
        "    CheckHostIP no",
        "    UpdateHostKeys no",
        *([f"    ProxyJump {BASTION_ALIAS}"] if jump else []),
    ]
    return "\n".join(lines) + "\n"


def export(
    clusters: Sequence[Cluster],
    pins: Mapping[Key, str],
    settings: Settings,
    names: Mapping[Key, str] | None = None,
) -> Export:
    """The ssh_config text and the known_hosts text for ``clusters``.

    ``pins`` maps an endpoint to its pinned key (``"ssh-ed25519 AAAA..."``); ``names``
    gives the aliases (default: :func:`aliases` of ``clusters``). An endpoint without a
    pin still gets its block: OpenSSH then refuses it (strict checking) until jobtunnel
    has connected once and pinned the key. So does the bastion (its pin:
    ``pins[settings.bastion.key]``).
    """
    refused: list[tuple[Cluster, str]] = []
    blocks: list[str] = []
    pin_lines: list[str] = []

    def add(cluster: Cluster, alias: str, jump: bool, what: str = "") -> None:
        blocks.append(_block(cluster, alias, settings, jump, what))
        key_text = pins.get(cluster.key)
        line = _pin_line(alias, key_text) if key_text else None
        if line is not None:
            pin_lines.append(line)

    bastion = settings.bastion
    jump = False
    if bastion is not None:
        why = problem(bastion)
        if why is None:
            add(bastion, BASTION_ALIAS, False, "bastion (ssh.proxy_jump) ")
            jump = True
        else:
            refused.append((bastion, f"the bastion (ssh.proxy_jump): {why}"))
    good: list[Cluster] = []
    for cluster in clusters:
        why = problem(cluster)
        if why is None:
            good.append(cluster)
        else:
            refused.append((cluster, why))
    alias_of = dict(names) if names is not None else aliases(good)
    for cluster in good:
        alias = alias_of.get(cluster.key)
        if alias is None or _sanitised(alias) != alias:
            refused.append((cluster, "it has no usable alias"))
        elif jump and alias.lower() == BASTION_ALIAS.lower():
            refused.append((cluster, f"its alias {alias} is the bastion's"))
        else:
            add(cluster, alias, jump)
    config = HEADER + "".join("\n" + b for b in blocks)
    known = "".join(line + "\n" for line in pin_lines)
    return Export(config, known, tuple(refused))
