"""The tray menu as plain data: a pure function of a status snapshot.

:func:`build_menu` turns the daemon's ``status`` reply (None when no daemon answers) into a
tuple of :class:`Item`; a thin adapter (:mod:`jobtunnel.tray.pystray_menu`) makes that a
``pystray.Menu``. Clicks carry an :class:`Action`: an id from :data:`ACTIONS` and string
arguments, which :mod:`jobtunnel.tray.actions` carries out. Nothing here touches a display,
a socket or a file.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .icon import tooltip

__all__ = [
    "ACTIONS",
    "SEPARATOR",
    "Action",
    "Item",
    "MenuContext",
    "build_menu",
    "clip",
    "forward_text",
    "forward_url",
    "notebook_on_tunnel",
    "since_text",
    "ssh_command",
]

ACTIONS = frozenset(
    {
        "open_url",  # (url,)
        "copy_text",  # (text, what)
        "reconnect",  # (name,)
        "connect",  # (name,)
        "disconnect",  # (name,)
        "forget",  # (name,)
        "trust",  # (name,)
        "open_folder",  # (path,)
        "add_job_log",  # (folder,)
        "pause_all",
        "resume_all",
        "copy_public_key",  # (path,)
        "open_log",  # (path,)
        "edit_settings",  # (path,)
        "start_daemon",
        "stop_daemon",
        "quit",
    }
)

# Tunnel states with a running supervisor (it can be reconnected or disconnected).
RUNNING = frozenset({"pending", "connecting", "up", "reconnecting", "failed"})
JUPYTER_PORT = 8888
TLS_PORTS = frozenset({443, 8443, JUPYTER_PORT})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Menu lines longer than this are cut (a host-key error runs to several hundred characters).
MAX_TEXT = 90


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Action:
    """What a click does: an id from ACTIONS and its arguments."""

    id: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.id not in ACTIONS:
            raise ValueError(f"unknown tray action {self.id!r}")


@dataclass(frozen=True)
class Item:
    """One menu entry; ``children`` make it a submenu, ``separator`` a line."""

    text: str = ""
    action: Action | None = None
    enabled: bool = True
    checked: bool | None = None
    children: tuple[Item, ...] = ()
    separator: bool = False

    def find(self, text: str) -> Item | None:
        """The first item (this one or below) whose text starts with ``text``."""
        if self.text.startswith(text) and not self.separator:
            return self
        for child in self.children:
            if (hit := child.find(text)) is not None:
                return hit
        return None


SEPARATOR = Item(separator=True)


@dataclass(frozen=True)
class MenuContext:
    """What the menu needs besides the snapshot: the clock and local file locations."""

    now: float
    identity_file: str
    public_key: str
    log_file: str
    config_file: str
    # Set while the tray has spawned a daemon that has not answered yet.
    starting_daemon: bool = False
    # Why the daemon does not answer (shown when it is not running).
    detail: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def since_text(since: object, now: float) -> str:
    """ "since 13:05" today, "since Nov 24 13:05" before; empty when unknown."""
    if not isinstance(since, int | float) or since <= 0:
        return ""
    then, today = time.localtime(since), time.localtime(now)
    if then[:3] == today[:3]:
        return time.strftime("since %H:%M", then)
    return time.strftime("since %b %d %H:%M", then)


def _local_host(fwd: Mapping[str, Any]) -> str:
    bind = fwd.get("bind_address") or "127.0.0.1"
    if bind in ("127.0.0.1", "localhost"):
        return "localhost"
    return f"[{bind}]" if ":" in str(bind) else str(bind)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def forward_text(fwd: Mapping[str, Any]) -> str:
    """ "localhost:8888 -> 8888  up, 2 clients" (remote host named when not loopback)."""
    port = fwd.get("local_port")
    local = f"{_local_host(fwd)}:{port if port is not None else '?'}"
    state = str(fwd.get("state") or "?")
    if fwd.get("dynamic"):
        head = f"{local} SOCKS proxy"
    else:
        rhost, rport = fwd.get("remote_host"), fwd.get("remote_port")
        remote = str(rport) if not rhost or rhost in LOOPBACK else f"{rhost}:{rport}"
        head = f"{local} -> {remote}"
    words = state
    if state == "held":
        words = "waiting for the link"
    elif state == "error" and fwd.get("error"):
        words = f"error: {fwd['error']}"
    clients = fwd.get("clients")
    if isinstance(clients, int) and clients:
        words += f", {_plural(clients, 'client')}"
    return f"{head}  {words}"


def notebook_on_tunnel(notebook_url: str, local_port: int) -> str:
    """A Rescale notebook URL moved onto the tunnel, token kept.

    ``https://platform.rescale.com/notebooks/<id>/?token=T`` ->
    ``https://localhost:<local_port>/?token=T`` (Jupyter on Rescale serves TLS).
    """
    query = urlsplit(notebook_url).query
    return f"https://localhost:{local_port}/" + (f"?{query}" if query else "")


def forward_url(ep: Mapping[str, Any], fwd: Mapping[str, Any]) -> str | None:
    """The browser address of a forwarded service; None for SOCKS or an unknown port."""
    port = fwd.get("local_port")
    if fwd.get("dynamic") or not isinstance(port, int):
        return None
    rport = fwd.get("remote_port")
    notebook = ep.get("notebook_url")
    if rport == JUPYTER_PORT and isinstance(notebook, str) and notebook:
        return notebook_on_tunnel(notebook, port)
    host = _local_host(fwd)
    scheme = "https" if rport in TLS_PORTS else "http"
    return f"{scheme}://{host}:{port}/"


def ssh_command(ep: Mapping[str, Any], identity_file: str) -> str:
    """The OpenSSH command that makes the same tunnel by hand."""
    words = ["ssh", "-i", identity_file, "-p", str(ep.get("port") or 22)]
    for fwd in ep.get("forwards") or []:
        if not isinstance(fwd, Mapping):
            continue
        bind = str(fwd.get("bind_address") or "127.0.0.1")
        bind = f"[{bind}]" if ":" in bind else bind
        local = fwd.get("local_port") or fwd.get("remote_port")
        if fwd.get("dynamic"):
            words += ["-D", f"{bind}:{local}"]
            continue
        rhost = str(fwd.get("remote_host") or "localhost")
        rhost = f"[{rhost}]" if ":" in rhost else rhost
        words += ["-L", f"{bind}:{local}:{rhost}:{fwd.get('remote_port')}"]
    words.append(f"{ep.get('user')}@{ep.get('host')}")
    return shlex.join(words)


def _endpoint_items(ep: Mapping[str, Any], ctx: MenuContext) -> list[Item]:
    name = str(ep.get("name") or f"{ep.get('user')}@{ep.get('host')}:{ep.get('port')}")
    state = str(ep.get("state") or "?")
    if ep.get("action") == "paused":
        state = "paused"
    job = ep.get("job_id")
    since = since_text(ep.get("since"), ctx.now)
    header = "  ".join(str(p) for p in (job, name, f"{state} {since}".strip()) if p)
    running = state in RUNNING
    sub: list[Item] = []
    error = ep.get("last_error")
    if isinstance(error, str) and error and state != "up":
        sub.append(Item(clip(f"Last error: {error}"), enabled=False))
    reconnects = ep.get("reconnects")
    if isinstance(reconnects, int) and reconnects:
        sub.append(Item(f"Reconnected {_plural(reconnects, 'time')}", enabled=False))
    if sub:
        sub.append(SEPARATOR)
    sub += [
        Item(
            "Copy ssh command",
            Action("copy_text", (ssh_command(ep, ctx.identity_file), "ssh command")),
        ),
        Item("Reconnect now", Action("reconnect", (name,)), enabled=running),
        *(
            [Item("Trust the new host key", Action("trust", (name,)))]
            if ep.get("last_error_kind") == "host_key_changed"
            else []
        ),
        Item("Disconnect", Action("disconnect", (name,)))
        if running
        else Item("Connect", Action("connect", (name,))),
        Item("Forget", Action("forget", (name,))),
    ]
    items = [Item(clip(header), children=tuple(sub))]
    for fwd in ep.get("forwards") or []:
        if not isinstance(fwd, Mapping):
            continue
        url = forward_url(ep, fwd)
        text = clip("    " + forward_text(fwd))
        if url is None:
            items.append(Item(text, enabled=False))
        else:
            items.append(
                Item(text, Action("open_url", (url,)), enabled=fwd.get("state") != "closed")
            )
    return items


def _no_daemon(ctx: MenuContext) -> tuple[Item, ...]:
    head = "jobtunnel daemon is not running"
    return (
        Item(clip(head + (f": {ctx.detail}" if ctx.detail else "")), enabled=False),
        Item("Starting daemon…", enabled=False)
        if ctx.starting_daemon
        else Item("Start daemon", Action("start_daemon")),
        SEPARATOR,
        Item("Open log", Action("open_log", (ctx.log_file,))),
        Item("Edit settings", Action("edit_settings", (ctx.config_file,))),
        SEPARATOR,
        Item("Quit", Action("quit")),
    )


def build_menu(snapshot: Mapping[str, Any] | None, ctx: MenuContext) -> tuple[Item, ...]:
    """The whole menu for one snapshot."""
    if snapshot is None:
        return _no_daemon(ctx)
    endpoints = [ep for ep in snapshot.get("endpoints") or [] if isinstance(ep, Mapping)]
    daemon = snapshot.get("daemon") if isinstance(snapshot.get("daemon"), Mapping) else {}
    assert isinstance(daemon, Mapping)
    watch = daemon.get("watch") if isinstance(daemon.get("watch"), Mapping) else {}
    assert isinstance(watch, Mapping)
    folders: Sequence[str] = [str(f) for f in watch.get("folders") or []]

    items: list[Item] = [Item(tooltip(snapshot).removeprefix("jobtunnel: "), enabled=False)]
    if daemon.get("save_error"):
        items.append(Item(clip(f"Cannot save state: {daemon['save_error']}"), enabled=False))
    items.append(SEPARATOR)
    for ep in endpoints:
        items += _endpoint_items(ep, ctx)
    if not endpoints:
        where = f"watching {_plural(len(folders), 'folder')}" if folders else "no watched folder"
        items.append(Item(f"No clusters yet ({where})", enabled=False))
    items.append(SEPARATOR)

    if len(folders) > 1:
        items.append(
            Item(
                "Open watched folder",
                children=tuple(Item(f, Action("open_folder", (f,))) for f in folders),
            )
        )
    else:
        items.append(
            Item(
                "Open watched folder",
                Action("open_folder", (folders[0],)) if folders else None,
                enabled=bool(folders),
            )
        )
    items.append(Item("Add job log…", Action("add_job_log", (folders[0] if folders else "",))))
    active = [ep for ep in endpoints if ep.get("action") == "active"]
    paused = [ep for ep in endpoints if ep.get("action") == "paused"]
    if active or not paused:
        items.append(Item("Pause all", Action("pause_all"), enabled=bool(active)))
    if paused:
        items.append(Item("Resume all", Action("resume_all")))
    items += [
        Item("Copy public key", Action("copy_public_key", (ctx.public_key,))),
        Item("Open log", Action("open_log", (ctx.log_file,))),
        Item("Edit settings", Action("edit_settings", (ctx.config_file,))),
        SEPARATOR,
        Item("Stop daemon", Action("stop_daemon")),
        Item("Quit", Action("quit")),
    ]
    return tuple(items)
