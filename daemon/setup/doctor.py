"""``jobtunnel doctor``: every check that stands between the user and a working tunnel.

Each check returns :class:`Check` records (one line each, with the fix); the CLI prints
them. A check never changes anything and makes no network call beyond the local control
socket and local bind tests.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shlex
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import paths
from ..api.schema import Command, SchemaError, StatusSnapshot, from_wire
from ..config import Config, ConfigError, load_config
from ..core.forward import parse_dynamic, parse_forward
from ..files import permission_problem
from . import keys

if TYPE_CHECKING:
    from ..engine.agent import Agent, AgentKey

__all__ = [
    "Check",
    "check_agent",
    "check_config",
    "check_daemon",
    "check_folders",
    "check_keys",
    "check_network_watch",
    "check_ports",
    "check_public_key",
    "check_rescale",
    "check_service",
    "check_tray",
    "port_holder_command",
    "run_checks",
    "service_file",
    "start_daemon_command",
    "usable_keys",
]

Status = Literal["ok", "info", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report; ``fail`` means the user has something to do (``fix``)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        mark = {"ok": "ok  ", "info": "info", "fail": "FAIL"}[self.status]
        fix = f"  -> {self.fix}" if self.fix else ""
        return f"[{mark}] {self.name}: {self.detail}{fix}"


def usable_keys(config: Config) -> list[Path]:
    """The private keys the tunnel engine would offer that exist (config list, else own
    keys, else ~/.ssh defaults), without ~/.ssh/config per-host entries."""
    from ..engine.auth import default_identity_files

    if config.ssh.identity_files:
        return [p for p in (Path(f).expanduser() for f in config.ssh.identity_files) if p.exists()]
    return [p for p in default_identity_files() if p.exists()]


def check_keys(config: Config) -> list[Check]:
    """A key exists, and every key that would be offered is private (0600)."""
    found = usable_keys(config)
    agent = os.environ.get("SSH_AUTH_SOCK")
    if not found:
        if agent:
            return [Check("key", "info", f"no key file; only the ssh-agent at {agent}")]
        return [Check("key", "fail", "no private key found", "jobtunnel keys generate (or init)")]
    out = []
    for path in found:
        problem = permission_problem(path)
        if problem:
            out.append(
                Check(
                    "key",
                    "fail",
                    f"{path} is readable by others: refused",
                    f"chmod 600 {shlex.quote(str(path))}",
                )
            )
        else:
            out.append(Check("key", "ok", f"{path} (private)"))
    return out


def check_agent(
    find: Callable[[], Agent] | None = None,
    keys_of: Callable[[Agent], list[AgentKey]] | None = None,
) -> Check:
    """Which SSH agent the tunnels would ask (ssh-agent, Pageant, Windows' OpenSSH agent)
    and which keys it holds; informational, since a key file works without one."""
    from ..engine.agent import agent_keys, choose_agent

    agent = (find or choose_agent)()
    if agent.kind == "none":
        return Check("agent", "info", f"none: {agent.why}")
    try:
        held = (keys_of or agent_keys)(agent)
    except OSError as exc:
        return Check("agent", "info", f"{agent.kind} ({agent.why}) does not answer: {exc}")
    if not held:
        add = "add your key in Pageant" if agent.kind == "pageant" else "ssh-add KEYFILE"
        return Check("agent", "info", f"{agent.kind} ({agent.why}): holds no keys", add)
    listing = "; ".join(f"{k.algorithm} {k.fingerprint} {k.comment}".rstrip() for k in held)
    return Check("agent", "ok", f"{agent.kind} ({agent.why}): {len(held)} key(s): {listing}")


def check_public_key(config: Config) -> Check:
    """The public key to paste into Rescale, with its fingerprint."""
    found = usable_keys(config)
    if not found:
        return Check("public key", "fail", "no key to show", "jobtunnel keys generate")
    try:
        own = keys.public_key(found[0])
    except keys.KeyFileError as exc:
        quoted = shlex.quote(str(found[0]))
        return Check("public key", "fail", str(exc), f"ssh-keygen -y -f {quoted} > {quoted}.pub")
    return Check(
        "public key",
        "info",
        f"{own.fingerprint} {own.line}",
        "paste into Rescale: Account -> Job Settings -> SSH Public Key",
    )


def check_config(path: Path | None) -> tuple[Check, Config]:
    """The config file parses and validates; the config the other checks should use."""
    try:
        config, file = load_config(path)
    except ConfigError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid"
        return Check("config", "fail", first, "fix the file; `jobtunnel config check`"), Config()
    if not file.exists():
        return Check(
            "config", "info", f"{file} not present: defaults apply", "jobtunnel init"
        ), config
    return Check("config", "ok", f"{file} is valid"), config


def check_folders(config: Config) -> list[Check]:
    out = []
    for folder in config.watch.folders:
        path = Path(folder).expanduser()
        if path.is_dir():
            out.append(Check("watched folder", "ok", str(path)))
        else:
            fix = f"jobtunnel init (or mkdir -p {shlex.quote(str(path))})"
            out.append(Check("watched folder", "fail", f"{path} does not exist", fix))
    return out


def check_daemon(
    config: Config, call: Callable[..., Any] | None = None
) -> tuple[Check, StatusSnapshot | None]:
    """Whether the daemon answers on its control API; its status when it does."""
    from ..api.client import ControlError, DaemonNotRunning, call_sync

    call = call or call_sync
    try:
        reply = call(Command.STATUS, transport=config.daemon.control, timeout=5.0)
    except DaemonNotRunning:
        fix = start_daemon_command(installed=service_file().exists())
        return Check("daemon", "fail", "not running", fix), None
    except (ControlError, OSError, TimeoutError) as exc:
        return Check(
            "daemon", "fail", f"not answering: {exc}", "jobtunnel stop; jobtunnel run"
        ), None
    try:
        status = from_wire(reply)
    except SchemaError as exc:
        return Check(
            "daemon",
            "fail",
            f"answers, but its status does not fit this program's schema: {exc}",
            "restart the daemon after an upgrade (jobtunnel stop; jobtunnel run)",
        ), None
    return Check("daemon", "ok", f"running (pid {status.daemon.pid})"), status


def service_file(platform: str = sys.platform) -> Path:
    """Where `jobtunnel service install` puts the daemon's login service definition."""
    if platform == "darwin":
        return Path("~/Library/LaunchAgents/com.jobtunnel.daemon.plist").expanduser()
    if platform == "win32":
        # The logon task's definition, as `jobtunnel service install` keeps it.
        return paths.data_dir() / "service" / "jobtunnel.xml"
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(config_home) / "systemd" / "user" / "jobtunnel.service"


def check_service(platform: str = sys.platform) -> Check:
    path = service_file(platform)
    if path.exists():
        return Check("login service", "ok", f"installed ({path})")
    return Check(
        "login service", "fail", f"not installed ({path} missing)", "jobtunnel service install"
    )


def check_tray(
    platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
    tray_backend: Callable[[], Any] = lambda: importlib.import_module("jobtunnel.tray.backend"),
) -> Check:
    """Which tray backend the tray would use, and why (informational)."""
    with contextlib.suppress(ImportError, AttributeError):
        name, menu, why = tray_backend().describe()
        status: Status = "info"
        return Check("tray", status, f"{name}{'' if menu else ' (no menu)'}: {why}")
    forced = environ.get("PYSTRAY_BACKEND")
    if forced:
        return Check("tray", "info", f"{forced}: forced by PYSTRAY_BACKEND")
    if platform in ("win32", "darwin"):
        return Check("tray", "info", f"{platform}: the native tray")
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        return Check("tray", "info", "none: no display (DISPLAY / WAYLAND_DISPLAY unset)")
    if importlib.util.find_spec("gi") is None:
        return Check(
            "tray",
            "info",
            "xorg: icon only, no menu (PyGObject not importable)",
            "pip install 'pygobject<3.51'",
        )
    return Check("tray", "info", "appindicator: PyGObject importable (gtk as fallback)")


def _bind_free(host: str, port: int) -> str | None:
    """None when ``host:port`` can be bound now, else why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        if os.name == "posix":
            # As a listener would: a port left in TIME_WAIT is free for reuse.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def port_holder_command(port: int, platform: str = sys.platform) -> str:
    """The command that names the process listening on ``port``, in this OS's words."""
    if platform == "win32":
        return f"netstat -ano | findstr :{port}"
    if platform == "darwin":
        return f"lsof -nP -iTCP:{port} -sTCP:LISTEN"
    return f"ss -ltnp 'sport = :{port}'"


def start_daemon_command(platform: str = sys.platform, installed: bool = True) -> str:
    """How to start the daemon: its login service when installed, else by hand."""
    if not installed:
        return "jobtunnel run (or install the login service)"
    if platform == "win32":
        return "schtasks /Run /TN jobtunnel"
    if platform == "darwin":
        return "launchctl kickstart gui/$(id -u)/com.jobtunnel.daemon"
    return "systemctl --user start jobtunnel"


def _daemon_ports(status: StatusSnapshot | None) -> set[int]:
    if status is None:
        return set()
    return {
        f.local_port for ep in status.endpoints for f in ep.forwards if f.local_port is not None
    }


def check_ports(config: Config, daemon_status: StatusSnapshot | None = None) -> list[Check]:
    """Each configured local port is free, or held by the running daemon itself."""
    specs = [parse_forward(s) for s in config.tunnels.forwards]
    specs += [parse_dynamic(s) for s in config.tunnels.dynamic_forwards]
    ours = _daemon_ports(daemon_status)
    out = []
    for spec in specs:
        if not spec.local_port:
            continue
        host = spec.bind_address or config.tunnels.bind_address
        where = f"{host}:{spec.local_port}"
        if spec.local_port in ours:
            out.append(Check("local port", "ok", f"{where} in use by the jobtunnel daemon"))
            continue
        why = _bind_free(host, spec.local_port)
        if why is None:
            out.append(Check("local port", "ok", f"{where} free"))
        else:
            out.append(
                Check(
                    "local port",
                    "fail",
                    f"{where} not available ({why}); tunnels would use the next free port",
                    f"see who holds it: {port_holder_command(spec.local_port)}; "
                    "or change tunnels.forwards",
                )
            )
    return out


def check_rescale(config: Config, status: StatusSnapshot | None) -> Check:
    """The Rescale API key: where it comes from and, from the running daemon, whether
    the API accepts it (no request of its own)."""
    from ..engine.rescale_credentials import CredentialsError, find

    name = "Rescale API"
    try:
        creds = find(config.rescale)
    except CredentialsError as exc:
        return Check(name, "fail", str(exc), "jobtunnel rescale login, or fix [rescale] profile")
    if creds is None:
        why = "turned off ([rescale] enabled = false)" if not config.rescale.enabled else "no key"
        return Check(
            name, "info", f"off: {why}; logs are the only source", "jobtunnel rescale login"
        )
    view = status.daemon.rescale if status is not None else None
    if view is None:
        return Check(name, "info", f"key for {creds.base} from {creds.origin} (not checked)")
    if view.state in ("stopped", "error"):
        fix = "jobtunnel rescale login" if view.state == "stopped" else "jobtunnel rescale refresh"
        return Check(name, "fail", f"{creds.base}: {view.error}", fix)
    return Check(name, "ok", f"{creds.base} answers (key from {creds.origin})")


def check_network_watch(config: Config, status: StatusSnapshot | None) -> Check | None:
    """What tells the running daemon of network changes and wakes (None: no daemon)."""
    name = "network watch"
    if not config.daemon.watch_network:
        return Check(name, "info", "off (daemon.watch_network = false): links wait for keepalives")
    if status is None:
        return None
    sources = status.daemon.network_watch
    if not sources:
        return Check(name, "info", "not reported by this daemon", "restart the daemon")
    if all(s.startswith("polling") for s in sources):
        why = ", ".join(sources)
        return Check(name, "info", f"{why}: a change is noticed within that, not at once")
    return Check(name, "ok", ", ".join(sources))


def run_checks(
    config_path: Path | None = None, call: Callable[..., Any] | None = None
) -> list[Check]:
    """Every check, in the order a user would fix them."""
    config_check, config = check_config(config_path)
    results = [*check_keys(config), check_agent(), check_public_key(config), config_check]
    results += check_folders(config)
    daemon_check, status = check_daemon(config, call)
    results += [daemon_check, check_service(), check_tray(), check_rescale(config, status)]
    if (network := check_network_watch(config, status)) is not None:
        results.append(network)
    results += check_ports(config, status)
    return results
