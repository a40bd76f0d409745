"""The tray menu as plain data: a pure function of a status snapshot.

:func:`build_menu` turns a :class:`~jobtunnel.daemon.api.schema.StatusSnapshot` (None when
no daemon answers) into a tuple of :class:`Item`; a thin adapter
(:mod:`jobtunnel.tray.pystray_menu`) makes that a ``pystray.Menu``. Clicks carry an
:class:`Action`: a :class:`~jobtunnel.daemon.api.schema.TrayAction` and string arguments,
which :meth:`jobtunnel.tray.app.TrayApp.dispatch` carries out. Nothing here touches a
display, a socket or a file.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import PurePath
from urllib.parse import urlsplit

from jobtunnel.daemon.api.schema import (
    Decision,
    EndpointView,
    ErrorKind,
    ForwardState,
    ForwardView,
    MoveView,
    ServiceState,
    SourceKind,
    SourceView,
    StatusSnapshot,
    TrayAction,
    TunnelState,
)

from .icon import tooltip
from .putty import ppk_for, putty_command

__all__ = [
    "SEPARATOR",
    "Action",
    "Item",
    "MenuContext",
    "build_menu",
    "clip",
    "cluster_tools",
    "forward_text",
    "forward_url",
    "move_text",
    "notebook_on_tunnel",
    "since_text",
    "source_text",
    "ssh_command",
]

# Tunnel states with a running supervisor (it can be reconnected or disconnected).
RUNNING = frozenset(
    {
        TunnelState.PENDING,
        TunnelState.CONNECTING,
        TunnelState.UP,
        TunnelState.RECONNECTING,
        TunnelState.FAILED,
    }
)
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
    """What a click does: a TrayAction (its value is accepted too) and its arguments."""

    id: TrayAction
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            kind = TrayAction(self.id)
        except ValueError:
            raise ValueError(f"unknown tray action {self.id!r}") from None
        object.__setattr__(self, "id", kind)


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
    # jobtunnel's ssh_config (the daemon writes it); empty: no terminal or scp items.
    ssh_config: str = ""
    # Set while the tray has spawned a daemon that has not answered yet.
    starting_daemon: bool = False
    # Why the daemon does not answer (shown when it is not running).
    detail: str | None = None
    # PuTTY's executable where it is installed: adds "Open in PuTTY".
    putty: str | None = None
    # A job the Rescale API saw end leaves the menu this long after (rescale.hide_ended_after).
    hide_ended_after: float = 3600.0


def since_text(since: float | None, now: float) -> str:
    """ "since 13:05" today, "since Nov 24 13:05" before; empty when unknown."""
    if since is None or since <= 0:
        return ""
    then, today = time.localtime(since), time.localtime(now)
    if then[:3] == today[:3]:
        return time.strftime("since %H:%M", then)
    return time.strftime("since %b %d %H:%M", then)


def _local_host(fwd: ForwardView) -> str:
    bind = fwd.bind_address or "127.0.0.1"
    if bind in ("127.0.0.1", "localhost"):
        return "localhost"
    return f"[{bind}]" if ":" in bind else bind


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def forward_text(fwd: ForwardView) -> str:
    """ "localhost:8888 -> 8888 Jupyter  up, 2 clients" (remote host named when not
    loopback; the service's name when known)."""
    port = fwd.local_port
    local = f"{_local_host(fwd)}:{port if port is not None else '?'}"
    if fwd.dynamic:
        head = f"{local} SOCKS proxy"
    else:
        rhost, rport = fwd.remote_host, fwd.remote_port
        remote = str(rport) if not rhost or rhost in LOOPBACK else f"{rhost}:{rport}"
        head = f"{local} -> {remote}"
    if fwd.name:
        head += f" {fwd.name}"
    words = fwd.state.value
    if fwd.no_service:
        words = "no service (nothing listens there on the cluster)"
    elif fwd.state is ForwardState.HELD:
        words = "waiting for the link"
    elif fwd.state is ForwardState.ERROR and fwd.error:
        words = f"error: {fwd.error}"
    if fwd.clients:
        words += f", {_plural(fwd.clients, 'client')}"
    return f"{head}  {words}"


def notebook_on_tunnel(notebook_url: str, local_port: int, secure: bool = True) -> str:
    """A Rescale notebook URL moved onto the tunnel, token kept.

    ``https://platform.rescale.com/notebooks/<id>/?token=T`` ->
    ``https://localhost:<local_port>/?token=T`` (Jupyter on Rescale serves TLS;
    ``secure`` False when the tunnel's probe found it does not).
    """
    query = urlsplit(notebook_url).query
    scheme = "https" if secure else "http"
    return f"{scheme}://localhost:{local_port}/" + (f"?{query}" if query else "")


def forward_url(ep: EndpointView, fwd: ForwardView) -> str | None:
    """The browser address of a forwarded service; None for SOCKS or an unknown port."""
    port = fwd.local_port
    if fwd.dynamic or port is None:
        return None
    rport = fwd.remote_port
    found = next((s for s in ep.services if s.port == rport and s.url), None)
    if found is not None and found.url is not None:
        return found.url  # discovery knows the scheme, the path and the token
    # The tunnel's TLS probe, once it has answered; the port's usual scheme before.
    secure = fwd.tls if fwd.tls is not None else rport in TLS_PORTS
    if rport == JUPYTER_PORT and ep.notebook_url:
        return notebook_on_tunnel(ep.notebook_url, port, secure)
    scheme = "https" if secure else "http"
    return f"{scheme}://{_local_host(fwd)}:{port}/"


def ssh_command(ep: EndpointView, identity_file: str) -> str:
    """The OpenSSH command that makes the same tunnel by hand."""
    words = ["ssh", "-i", identity_file, "-p", str(ep.port)]
    for fwd in ep.forwards:
        bind = fwd.bind_address or "127.0.0.1"
        bind = f"[{bind}]" if ":" in bind else bind
        local = fwd.local_port or fwd.remote_port
        if fwd.dynamic:
            words += ["-D", f"{bind}:{local}"]
            continue
        rhost = fwd.remote_host or "localhost"
        rhost = f"[{rhost}]" if ":" in rhost else rhost
        words += ["-L", f"{bind}:{local}:{rhost}:{fwd.remote_port}"]
    words.append(f"{ep.user}@{ep.host}")
    return shlex.join(words)


def cluster_tools(ep: EndpointView, ctx: MenuContext) -> list[Item]:
    """ "Open terminal" and "Copy scp command": OpenSSH with jobtunnel's ssh_config."""
    if not ep.ssh_alias or not ctx.ssh_config or ep.state is TunnelState.ENDED:
        return []
    ssh = ("ssh", "-F", ctx.ssh_config, ep.ssh_alias)
    scp = shlex.join(["scp", "-F", ctx.ssh_config, "FILE", f"{ep.ssh_alias}:"])
    return [
        Item("Open terminal", Action(TrayAction.OPEN_TERMINAL, ssh)),
        Item("Copy scp command", Action(TrayAction.COPY_TEXT, (scp, "scp command"))),
    ]


def _where(source: SourceView, *, short: bool) -> str:
    if source.kind is SourceKind.USER:
        return "added by you"
    if source.kind is SourceKind.RESCALE_API:
        return "the Rescale API"
    path = source.path or "?"
    if short:
        path = PurePath(path).name or path
    return f"{path}:{source.line}" if source.line else path


def source_text(ep: EndpointView) -> str:
    """Where the endpoint came from: "Source: /logs/job.log:3"."""
    if ep.source_info is not None:
        return f"Source: {_where(ep.source_info, short=False)}"
    return f"Source: {ep.source}:{ep.line}" if ep.line else f"Source: {ep.source}"


def move_text(ep: EndpointView, move: MoveView) -> str:
    """ "Job qpWia reports a new address 5.6.7.8 (from job2.log:14) - Switch"."""
    where = move.host if move.port == ep.port else f"{move.host} port {move.port}"
    job = f"Job {ep.job_id}" if ep.job_id else ep.name
    return f"{job} reports a new address {where} (from {_where(move.source, short=True)}) - Switch"


def _state_word(ep: EndpointView) -> str:
    if ep.action is Decision.PAUSED:
        return TunnelState.PAUSED.value
    if ep.action is Decision.PENDING:
        return Decision.PENDING.value
    return ep.state.value


def _endpoint_items(ep: EndpointView, ctx: MenuContext) -> list[Item]:
    name = ep.name
    since = since_text(ep.since, ctx.now)
    parts = (ep.job_label, name, f"{_state_word(ep)} {since}".strip())
    header = "  ".join(p for p in parts if p)
    waiting = ep.action is Decision.PENDING
    running = ep.state in RUNNING and not waiting
    sub: list[Item] = []
    if waiting and ep.waiting_reason:
        sub.append(Item(clip(f"Waiting: {ep.waiting_reason}"), enabled=False))
    if ep.last_error and ep.state is not TunnelState.UP:
        sub.append(Item(clip(f"Last error: {ep.last_error}"), enabled=False))
    if ep.reconnects:
        sub.append(Item(f"Reconnected {_plural(ep.reconnects, 'time')}", enabled=False))
    if ep.checked is not None:
        at = time.strftime("%H:%M", time.localtime(ep.checked.at))
        words = f"Checked at {at} ({ep.checked.reason}): {ep.checked.outcome}"
        sub.append(Item(clip(words), enabled=False))
    sub += [Item(clip(source_text(ep)), enabled=False), SEPARATOR]
    trust: list[Item] = []
    if ep.refused_key:
        trust = [
            Item(f"Trust key {ep.refused_key}", Action(TrayAction.TRUST, (name, ep.refused_key)))
        ]
    elif ep.last_error_kind is ErrorKind.HOST_KEY_CHANGED:
        trust = [Item("Trust the new host key", Action(TrayAction.TRUST, (name,)))]
    sub += [
        Item(
            "Copy ssh command",
            Action(TrayAction.COPY_TEXT, (ssh_command(ep, ctx.identity_file), "ssh command")),
        ),
        *_putty_items(ep, ctx, running),
        *cluster_tools(ep, ctx),
        Item("Reconnect now", Action(TrayAction.RECONNECT, (name,)), enabled=running),
        *trust,
        Item("Disconnect", Action(TrayAction.DISCONNECT, (name,)))
        if running
        else Item("Connect", Action(TrayAction.CONNECT, (name,))),
        Item("Forget", Action(TrayAction.FORGET, (name,))),
    ]
    if ep.job_url:
        sub.append(Item("Open job in Rescale", Action(TrayAction.OPEN_URL, (ep.job_url,))))
    items = [Item(clip(header), children=tuple(sub))]
    if ep.pending_move is not None:
        items.append(
            Item(clip("    " + move_text(ep, ep.pending_move)), Action(TrayAction.SWITCH, (name,)))
        )
    if waiting:
        items.append(Item("    Connect", Action(TrayAction.CONNECT, (name,))))
    for service in ep.services:
        if service.state is ServiceState.OFFERED:
            what = f"{service.port} ({service.title})" if service.title else str(service.port)
            items.append(
                Item(
                    clip(f"    Forward {what}"),
                    Action(TrayAction.FORWARD, (name, str(service.port))),
                )
            )
    for fwd in ep.forwards:
        url = forward_url(ep, fwd)
        text = clip("    " + forward_text(fwd))
        if url is None:
            items.append(Item(text, enabled=False))
        else:
            items.append(
                Item(
                    text,
                    Action(TrayAction.OPEN_URL, (url,)),
                    enabled=fwd.state is not ForwardState.CLOSED,
                )
            )
    return items


def _putty_items(ep: EndpointView, ctx: MenuContext, running: bool) -> list[Item]:
    if ctx.putty is None:
        return []
    ppk = ppk_for(ctx.identity_file)
    argv = putty_command(ctx.putty, ep, ppk, with_forwards=not running)
    return [Item("Open in PuTTY", Action(TrayAction.OPEN_PUTTY, (ppk, ctx.identity_file, *argv)))]


def _ended_long_ago(ep: EndpointView, ctx: MenuContext) -> bool:
    """A job the Rescale API saw end, longer ago than the config keeps it in the menu."""
    verified = ep.source_info is not None and ep.source_info.verified
    return verified and ep.state is TunnelState.ENDED and ctx.now - ep.since > ctx.hide_ended_after


def _no_daemon(ctx: MenuContext) -> tuple[Item, ...]:
    head = "jobtunnel daemon is not running"
    return (
        Item(clip(head + (f": {ctx.detail}" if ctx.detail else "")), enabled=False),
        Item("Starting daemon…", enabled=False)
        if ctx.starting_daemon
        else Item("Start daemon", Action(TrayAction.START_DAEMON)),
        SEPARATOR,
        Item("Open log", Action(TrayAction.OPEN_LOG, (ctx.log_file,))),
        Item("Edit settings", Action(TrayAction.EDIT_SETTINGS, (ctx.config_file,))),
        SEPARATOR,
        Item("Quit", Action(TrayAction.QUIT)),
    )


def build_menu(snapshot: StatusSnapshot | None, ctx: MenuContext) -> tuple[Item, ...]:
    """The whole menu for one snapshot."""
    if snapshot is None:
        return _no_daemon(ctx)
    endpoints = snapshot.endpoints
    daemon = snapshot.daemon
    folders = daemon.watch.folders

    items: list[Item] = [Item(tooltip(snapshot).removeprefix("jobtunnel: "), enabled=False)]
    if daemon.save_error:
        items.append(Item(clip(f"Cannot save state: {daemon.save_error}"), enabled=False))
    if daemon.rescale is not None and daemon.rescale.state != "off":
        items.append(Item(clip(daemon.rescale.line(ctx.now)), enabled=False))
    items.append(SEPARATOR)
    for ep in endpoints:
        if not _ended_long_ago(ep, ctx):
            items += _endpoint_items(ep, ctx)
    if not endpoints:
        where = f"watching {_plural(len(folders), 'folder')}" if folders else "no watched folder"
        items.append(Item(f"No clusters yet ({where})", enabled=False))
    items.append(SEPARATOR)

    if len(folders) > 1:
        items.append(
            Item(
                "Open watched folder",
                children=tuple(Item(f, Action(TrayAction.OPEN_FOLDER, (f,))) for f in folders),
            )
        )
    else:
        items.append(
            Item(
                "Open watched folder",
                Action(TrayAction.OPEN_FOLDER, (folders[0],)) if folders else None,
                enabled=bool(folders),
            )
        )
    items.append(
        Item("Add job log…", Action(TrayAction.ADD_JOB_LOG, (folders[0] if folders else "",)))
    )
    active = [ep for ep in endpoints if ep.action is Decision.ACTIVE]
    paused = [ep for ep in endpoints if ep.action is Decision.PAUSED]
    if active or not paused:
        items.append(Item("Pause all", Action(TrayAction.PAUSE_ALL), enabled=bool(active)))
    if paused:
        items.append(Item("Resume all", Action(TrayAction.RESUME_ALL)))
    items += [
        Item("Copy public key", Action(TrayAction.COPY_PUBLIC_KEY, (ctx.public_key,))),
        Item("Open log", Action(TrayAction.OPEN_LOG, (ctx.log_file,))),
        Item("Edit settings", Action(TrayAction.EDIT_SETTINGS, (ctx.config_file,))),
        SEPARATOR,
        Item("Stop daemon", Action(TrayAction.STOP_DAEMON)),
        Item("Quit", Action(TrayAction.QUIT)),
    ]
    return tuple(items)
