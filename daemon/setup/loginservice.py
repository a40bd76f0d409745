"""``jobtunnel service install|uninstall|status``: start jobtunnel at every login.

The templates live in the repository's ``service-files/`` folder, which is installed as
the package ``jobtunnel.service_files`` (see pyproject.toml): one copy, found through
importlib.resources in editable and regular installs alike.

Per platform (see :func:`plan` and :func:`commands`):

- linux: systemd user units ``jobtunnel.service`` (the daemon, ``Type=notify``) and
  ``jobtunnel-tray.service`` (with graphical-session.target), plus an XDG autostart file
  for desktops that never start graphical-session.target. The autostart file asks the
  user manager to start the tray unit (a no-op when it already runs: never two trays) and
  only without one starts the daemon and the tray itself.
- macos: LaunchAgents ``com.jobtunnel.daemon`` and ``com.jobtunnel.tray``.
- windows: two logon tasks, ``jobtunnel`` and ``jobtunnel-tray`` (Task Scheduler runs the
  actions of one task one after the other, and the daemon's never ends).

Every file written carries :data:`MARKER`; a manifest in the state dir lists the files and
the folders install created. ``uninstall`` removes only manifest entries (or, without a
manifest, the known file names) that still carry the marker, then the folders it created
if they are empty. Where the service manager cannot be reached, install still writes the
files (the autostart file works at the next login), says how to start jobtunnel instead
and exits 1.

Rendering (:func:`render`, :func:`plan`, :func:`commands`) is pure; the I/O is in
:func:`install`, :func:`uninstall` and :func:`status`, whose command runner is a
parameter so tests can record the commands.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.resources
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args
from xml.sax.saxutils import escape as xml_escape

from .. import paths
from ..files import replace_atomically

__all__ = [
    "MARKER",
    "PLATFORMS",
    "Command",
    "FileSpec",
    "Platform",
    "Result",
    "Runner",
    "Target",
    "commands",
    "host_platform",
    "install",
    "load_template",
    "main",
    "plan",
    "render",
    "status",
    "target_for",
    "uninstall",
    "values_for",
]

log = logging.getLogger(__name__)

Platform = Literal["linux", "macos", "windows"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)

# Uninstall deletes a file only while this line is in it: a file of the same name that the
# user wrote themselves is never removed.
MARKER = "jobtunnel-managed-file: written by `jobtunnel service install`"

DAEMON_UNIT = "jobtunnel.service"
TRAY_UNIT = "jobtunnel-tray.service"
AGENTS = ("com.jobtunnel.daemon", "com.jobtunnel.tray")
TASKS = ("jobtunnel", "jobtunnel-tray")
# Where `systemctl --user enable` links the units ([Install] WantedBy=).
WANTS = {DAEMON_UNIT: "default.target.wants", TRAY_UNIT: "graphical-session.target.wants"}

_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


# -- where and what: pure ------------------------------------------------------------------


def host_platform(platform: str = sys.platform) -> Platform:
    """This machine's login-service platform, from ``sys.platform``'s spelling."""
    if platform == "darwin":
        return "macos"
    if platform == "win32":
        return "windows"
    return "linux"


@dataclass(frozen=True)
class Target:
    """This installation as one platform's login service sees it."""

    platform: Platform
    python: Path  # the interpreter the service runs (pythonw.exe on Windows)
    home: Path
    config_home: Path  # XDG_CONFIG_HOME (linux)
    log_dir: Path
    data_dir: Path
    state_dir: Path  # the manifest lives here
    user: str
    uid: int

    @property
    def manifest(self) -> Path:
        return self.state_dir / f"service-{self.platform}.json"


def target_for(platform: Platform, environ: Mapping[str, str] | None = None) -> Target:
    """The target for ``platform`` from this process (interpreter, HOME, XDG, user).

    ``environ`` gives HOME and XDG_CONFIG_HOME; jobtunnel's own folders (logs, data, state)
    come from :mod:`paths`, as the daemon finds them. For another platform than this one
    (``--platform``), its folders are laid out under this HOME the way that platform would,
    so its files can be rendered and tested here.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    native = platform == host_platform()
    python = Path(sys.executable)
    user = getpass.getuser()
    if platform == "windows":
        # pythonw.exe sits beside python.exe and opens no console window.
        pythonw = python.with_name("pythonw.exe")
        if pythonw.exists() or not native:
            python = pythonw
        else:
            log.warning("no %s: the logon task runs %s, with a console window", pythonw, python)
        if env.get("USERDOMAIN") and env.get("USERNAME"):
            user = f"{env['USERDOMAIN']}\\{env['USERNAME']}"
        local = home / "AppData" / "Local" / "jobtunnel"
        log_dir, data_dir = (
            (paths.log_dir(), paths.data_dir()) if native else (local / "Logs", local)
        )
    elif platform == "macos":
        log_dir = paths.log_dir() if native else home / "Library" / "Logs" / "jobtunnel"
        data_dir = paths.data_dir()
    else:
        log_dir = paths.log_dir() if native else home / ".local" / "state" / "jobtunnel" / "log"
        data_dir = paths.data_dir()
    return Target(
        platform=platform,
        python=python,
        home=home,
        config_home=Path(env.get("XDG_CONFIG_HOME") or home / ".config"),
        log_dir=log_dir,
        data_dir=data_dir,
        state_dir=paths.state_dir(),
        user=user,
        uid=os.getuid() if hasattr(os, "getuid") else 0,
    )


@dataclass(frozen=True)
class FileSpec:
    """One rendered file: where it goes and what it holds."""

    path: Path
    text: str
    encoding: str = "utf-8"

    def data(self) -> bytes:
        # Encoded here so that install, status and uninstall compare the same bytes.
        return self.text.encode(self.encoding)


def load_template(name: str) -> str:
    return (importlib.resources.files("jobtunnel.service_files") / name).read_text("utf-8")


def render(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``@NAME@``; a placeholder without a value is a bug, not an empty string."""
    text = template
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ValueError(f"no value for {', '.join(left)} in the template")
    return text


def systemd_executable(path: str) -> str:
    """The executable word of an ExecStart= line (systemd.service(5) "Command lines")."""
    # systemd refuses these in an executable name however they are quoted.
    bad = sorted({c for c in path if c in "'\"\\" or not c.isprintable()})
    if bad:
        raise ValueError(
            f"systemd cannot run {path}: its path contains {' '.join(map(repr, bad))}; "
            "install jobtunnel into a folder without them"
        )
    path = path.replace("%", "%%")  # % starts a specifier; $ is not expanded in this word
    return path if _SYSTEMD_SAFE.fullmatch(path) else f'"{path}"'


def desktop_string(value: str) -> str:
    """A value of type string in a .desktop file."""
    return value.replace("\\", "\\\\")


def desktop_in_quotes(arg: str) -> str:
    """Text inside a double-quoted Exec= argument (after the string unescaping)."""
    for char in ("\\", '"', "`", "$"):
        arg = arg.replace(char, "\\" + char)
    return desktop_string(arg.replace("%", "%%"))


def values_for(target: Target, kind: str) -> dict[str, str]:
    """The placeholder values for a file of ``kind`` (systemd, desktop, xml), quoted for it."""
    python = str(target.python)
    log_dir = str(target.log_dir)
    if "\n" in python + log_dir:
        raise ValueError("a path with a newline cannot go into a service file")
    if kind == "systemd":
        return {"MARKER": MARKER, "PYTHON": systemd_executable(python), "LOG_DIR": log_dir}
    if kind == "desktop":
        return {
            "MARKER": MARKER,
            "PYTHON": desktop_string(python),
            "SH_PYTHON": desktop_in_quotes(shlex.quote(python)),
        }
    return {
        "MARKER": xml_escape(MARKER),
        "PYTHON": xml_escape(python),
        "PYTHONW": xml_escape(python),
        "LOG_DIR": xml_escape(log_dir),
        "USER": xml_escape(target.user),
    }


def plan(target: Target, template: Callable[[str], str] = load_template) -> list[FileSpec]:
    """The files that make ``target`` start jobtunnel at login, rendered."""
    if target.platform == "linux":
        units = target.config_home / "systemd" / "user"
        systemd = values_for(target, "systemd")
        return [
            FileSpec(units / DAEMON_UNIT, render(template(DAEMON_UNIT), systemd)),
            FileSpec(units / TRAY_UNIT, render(template(TRAY_UNIT), systemd)),
            FileSpec(
                target.config_home / "autostart" / "jobtunnel-tray.desktop",
                render(template("jobtunnel-tray.desktop"), values_for(target, "desktop")),
            ),
        ]
    xml = values_for(target, "xml")
    if target.platform == "macos":
        agents = target.home / "Library" / "LaunchAgents"
        return [
            FileSpec(agents / f"{label}.plist", render(template(f"{label}.plist"), xml))
            for label in AGENTS
        ]
    # schtasks reads the XML as UTF-16 (what Task Scheduler itself exports).
    return [
        FileSpec(
            target.data_dir / "service" / f"{task}.xml",
            render(template(f"{task}-task.xml"), xml),
            "utf-16",
        )
        for task in TASKS
    ]


@dataclass(frozen=True)
class Command:
    """A service-manager command; ``check=False`` ones may fail (e.g. nothing to unload)."""

    argv: tuple[str, ...]
    check: bool = True
    # Run only when this command succeeds (e.g. start the tray only in a graphical session).
    only_if: tuple[str, ...] | None = None

    def __str__(self) -> str:
        text = shlex.join(self.argv)
        return f"{shlex.join(self.only_if)} && {text}" if self.only_if else text


@dataclass(frozen=True)
class Commands:
    probe: Command  # succeeds when the service manager answers
    install: list[Command]
    before_remove: list[Command]
    after_remove: list[Command]
    status: list[Command]
    running: Command  # succeeds when the daemon runs


def commands(target: Target, files: Sequence[FileSpec]) -> Commands:
    """What to ask the platform's service manager, for the files of :func:`plan`."""
    if target.platform == "linux":
        sc = ("systemctl", "--user")
        return Commands(
            probe=Command((*sc, "show-environment")),
            install=[
                Command((*sc, "daemon-reload")),
                Command((*sc, "enable", "--now", DAEMON_UNIT)),
                Command((*sc, "enable", TRAY_UNIT)),
                # Outside a graphical session the tray would only fail for want of a display;
                # graphical-session.target starts it at the next graphical login.
                Command(
                    (*sc, "start", TRAY_UNIT),
                    only_if=(*sc, "is-active", "--quiet", "graphical-session.target"),
                ),
            ],
            before_remove=[Command((*sc, "disable", "--now", TRAY_UNIT, DAEMON_UNIT), False)],
            after_remove=[
                Command((*sc, "daemon-reload")),
                Command((*sc, "reset-failed", DAEMON_UNIT, TRAY_UNIT), False),
            ],
            status=[
                Command((*sc, "is-enabled", DAEMON_UNIT, TRAY_UNIT), False),
                Command((*sc, "is-active", DAEMON_UNIT, TRAY_UNIT), False),
            ],
            running=Command((*sc, "is-active", "--quiet", DAEMON_UNIT)),
        )
    if target.platform == "macos":
        domain = f"gui/{target.uid}"
        install: list[Command] = []
        for label, spec in zip(AGENTS, files, strict=True):
            # bootstrap refuses a loaded label: unload first so a re-install takes effect.
            install += [
                Command(("launchctl", "bootout", f"{domain}/{label}"), False),
                Command(("launchctl", "enable", f"{domain}/{label}")),
                Command(("launchctl", "bootstrap", domain, str(spec.path))),
            ]
        return Commands(
            probe=Command(("launchctl", "print", domain)),
            install=install,
            before_remove=[
                Command(("launchctl", "bootout", f"{domain}/{label}"), False) for label in AGENTS
            ],
            after_remove=[],
            status=[
                Command(("launchctl", "print", f"{domain}/{label}"), False) for label in AGENTS
            ],
            running=Command(("launchctl", "print", f"{domain}/{AGENTS[0]}")),
        )
    install = []
    for task, spec in zip(TASKS, files, strict=True):
        install += [
            Command(("schtasks", "/Create", "/XML", str(spec.path), "/TN", task, "/F")),
            Command(("schtasks", "/Run", "/TN", task)),
        ]
    before: list[Command] = []
    for task in TASKS:
        before += [
            Command(("schtasks", "/End", "/TN", task), False),
            Command(("schtasks", "/Delete", "/TN", task, "/F"), False),
        ]
    return Commands(
        probe=Command(("schtasks", "/Query", "/FO", "CSV", "/NH")),
        install=install,
        before_remove=before,
        after_remove=[],
        status=[
            Command(("schtasks", "/Query", "/TN", task, "/V", "/FO", "LIST"), False)
            for task in TASKS
        ],
        running=Command(("schtasks", "/Query", "/TN", TASKS[0])),
    )


# -- doing it: I/O -------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str


Runner = Callable[[Sequence[str]], Result]


def run_command(argv: Sequence[str]) -> Result:
    """The real runner: stdout and stderr together; a missing program is exit status 127."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        return Result(127, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Result(124, f"{shlex.join(argv)}: no answer within 60 s")
    log.debug("%s: exit status %d: %s", shlex.join(argv), done.returncode, done.stdout.strip())
    return Result(done.returncode, done.stdout.strip())


@dataclass
class Context:
    """How to carry out one action: where (``root``), for real or not, and what to say."""

    runner: Runner = run_command
    root: Path | None = None  # write under this folder as if it were / ; run no command
    dry_run: bool = False
    out: Callable[[str], None] = print
    err: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))
    said: list[str] = field(default_factory=list)

    def at(self, path: Path) -> Path:
        return self.root / path.relative_to(path.anchor) if self.root else path

    def say(self, text: str) -> None:
        self.said.append(text)
        self.out(text)

    def warn(self, text: str) -> None:
        self.said.append(text)
        self.err(text)


def _ours(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    for encoding in ("utf-8", "utf-16"):
        try:
            if MARKER in data.decode(encoding) or xml_escape(MARKER) in data.decode(encoding):
                return True
        except UnicodeDecodeError:
            continue
    return False


def _read_manifest(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {"files": [], "dirs": []}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable manifest %s: %s", path, exc)
        return {"files": [], "dirs": []}
    return {key: [str(p) for p in data.get(key, [])] for key in ("files", "dirs")}


def _mkdirs(path: Path, created: list[str]) -> None:
    """``mkdir -p``, noting each folder it made (outermost first) in ``created``."""
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    for folder in reversed(missing):
        folder.mkdir()
        created.append(str(folder))


def _write(path: Path, data: bytes) -> None:
    replace_atomically(path, data, mode=0o644)


def _run(ctx: Context, cmd: Command) -> Result | None:
    """Run ``cmd`` (None when ``only_if`` said no); report a failure of a checked one."""
    if cmd.only_if is not None and ctx.runner(cmd.only_if).returncode != 0:
        ctx.say(f"  skipped: {shlex.join(cmd.argv)} (condition not met: {shlex.join(cmd.only_if)})")
        return None
    result = ctx.runner(cmd.argv)
    ctx.say(
        f"  ran: {shlex.join(cmd.argv)}"
        + ("" if result.returncode == 0 else f" (exit status {result.returncode})")
    )
    if result.returncode != 0 and cmd.check and result.output:
        ctx.say("    " + result.output.replace("\n", "\n    "))
    return result


def _how_to_start(platform: Platform) -> str:
    if platform == "linux":
        return (
            "the XDG autostart file starts the tray and the daemon at your next graphical "
            "login; to start jobtunnel now: `jobtunnel run &` (or `nohup jobtunnel run "
            ">/dev/null 2>&1 &` to keep it after logout). From a login with a systemd user "
            "session, `jobtunnel service install` again enables the units."
        )
    if platform == "macos":
        return (
            "launchd loads ~/Library/LaunchAgents at your next login in the GUI; to start "
            "jobtunnel now: `jobtunnel run &`."
        )
    return "to start jobtunnel now: `pythonw -m jobtunnel.daemon run` (or `jobtunnel run`)."


def _manager_absent(ctx: Context, cmds: Commands) -> str:
    """Why the service manager cannot be used ("" when it answers)."""
    probe = ctx.runner(cmds.probe.argv)
    if probe.returncode == 0:
        return ""
    why = probe.output.splitlines()[-1] if probe.output else f"exit status {probe.returncode}"
    return f"the service manager did not answer (`{shlex.join(cmds.probe.argv)}`: {why})"


def _refuse_foreign(target: Target, ctx: Context) -> int | None:
    if target.platform != host_platform() and not ctx.dry_run and ctx.root is None:
        ctx.warn(
            f"jobtunnel: this is {host_platform()}: {target.platform} files can only be "
            "shown (--dry-run) or written under a folder (--root DIR)"
        )
        return 2
    return None


def install(target: Target, ctx: Context) -> int:
    """Write the files, enable and start the services; 0 done, 1 not all of it, 2 usage."""
    refused = _refuse_foreign(target, ctx)
    if refused is not None:
        return refused
    files = plan(target)
    cmds = commands(target, files)
    if ctx.dry_run:
        for spec in files:
            ctx.say(f"==> would write {ctx.at(spec.path)} ({spec.encoding}):")
            ctx.say(spec.text.rstrip("\n"))
        ctx.say(f"==> would record them in {ctx.at(target.manifest)}")
        ctx.say("==> would run:" if ctx.root is None else "==> would not run (--root):")
        for cmd in cmds.install:
            ctx.say(f"  {cmd}")
        return 0
    conflicts = [
        ctx.at(s.path) for s in files if ctx.at(s.path).exists() and not _ours(ctx.at(s.path))
    ]
    if conflicts:
        for path in conflicts:
            ctx.warn(f"jobtunnel: {path} exists and was not written by jobtunnel; move it away")
        ctx.warn("nothing was changed")
        return 1
    manifest_path = ctx.at(target.manifest)
    manifest = _read_manifest(manifest_path)
    created: list[str] = []
    for spec in files:
        path = ctx.at(spec.path)
        _mkdirs(path.parent, created)
        verb = (
            "wrote"
            if not path.exists()
            else ("unchanged" if path.read_bytes() == spec.data() else "updated")
        )
        if verb != "unchanged":
            _write(path, spec.data())
        ctx.say(f"{verb} {path}")
    _mkdirs(manifest_path.parent, created)
    # The folders created by an earlier install stay in the manifest: now they exist.
    manifest["dirs"] += [d for d in created if d not in manifest["dirs"]]
    manifest["files"] += [
        str(ctx.at(s.path)) for s in files if str(ctx.at(s.path)) not in manifest["files"]
    ]
    _write(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    if ctx.root is not None:
        ctx.say("not run (--root): " + "; ".join(str(c) for c in cmds.install))
        return 0
    absent = _manager_absent(ctx, cmds)
    if absent:
        ctx.warn(
            f"jobtunnel: {absent}, so nothing was enabled or started. The files above stay: "
            + _how_to_start(target.platform)
        )
        return 1
    failed = 0
    for cmd in cmds.install:
        result = _run(ctx, cmd)
        failed += bool(result and result.returncode != 0 and cmd.check)
    if failed:
        ctx.warn(f"jobtunnel: {failed} command(s) failed (above); {_how_to_start(target.platform)}")
        return 1
    ctx.say("jobtunnel now starts at every login; `jobtunnel service status` shows it")
    return 0


def _known_files(target: Target, ctx: Context) -> list[Path]:
    manifest = _read_manifest(ctx.at(target.manifest))
    listed = [Path(p) for p in manifest["files"]]
    # Without a manifest (state folder wiped), the file names install uses still count.
    return listed or [ctx.at(s.path) for s in plan(target)]


def uninstall(target: Target, ctx: Context) -> int:
    """Stop and disable the services, remove what install wrote; 0 done, 1 not all of it."""
    refused = _refuse_foreign(target, ctx)
    if refused is not None:
        return refused
    cmds = commands(target, plan(target))
    manifest_path = ctx.at(target.manifest)
    manifest = _read_manifest(manifest_path)
    files = _known_files(target, ctx)
    if target.platform == "linux":
        # `systemctl --user enable` made these links; without a manager to disable them
        # they would dangle.
        units = ctx.at(target.config_home / "systemd" / "user")
        links = [units / wants / unit for unit, wants in WANTS.items()]
    else:
        links = []
    if ctx.dry_run:
        ctx.say("==> would run:" if ctx.root is None else "==> would not run (--root):")
        for cmd in cmds.before_remove:
            ctx.say(f"  {cmd}")
        for path in files:
            if _ours(path):
                ctx.say(f"==> would remove {path}")
        for cmd in cmds.after_remove:
            ctx.say(f"  {cmd}")
        return 0
    manager = ctx.root is None and not (absent := _manager_absent(ctx, cmds))
    if manager:
        for cmd in cmds.before_remove:
            _run(ctx, cmd)
    elif ctx.root is None:
        ctx.warn(
            f"jobtunnel: {absent}: removing the files only; a running daemon keeps running "
            "until `jobtunnel stop`"
        )
    status = 0
    for path in files:
        if not path.exists():
            continue
        if not _ours(path):
            ctx.say(f"left {path}: it was not written by jobtunnel")
            continue
        try:
            path.unlink()
        except OSError as exc:
            ctx.warn(f"jobtunnel: cannot remove {path}: {exc.strerror or exc}")
            status = 1
            continue
        ctx.say(f"removed {path}")
    for link in links:
        if link.is_symlink() and link.name in {f.name for f in files}:
            link.unlink()
            ctx.say(f"removed {link}")
        if link.parent.is_dir() and not any(link.parent.iterdir()):
            link.parent.rmdir()
    if manager:
        for cmd in cmds.after_remove:
            _run(ctx, cmd)
    with contextlib.suppress(FileNotFoundError):
        manifest_path.unlink()
    for folder in sorted(manifest["dirs"], key=len, reverse=True):
        with contextlib.suppress(OSError):
            Path(folder).rmdir()  # only when empty: anything else in it stays
    if status == 0:
        ctx.say("jobtunnel no longer starts at login")
    return status


def status(target: Target, ctx: Context) -> int:
    """Say what is installed and running; 0 when installed, current and running."""
    refused = _refuse_foreign(target, ctx)
    if refused is not None:
        return refused
    files = plan(target)
    cmds = commands(target, files)
    problems = 0
    for spec in files:
        path = ctx.at(spec.path)
        if not path.exists():
            state = "not installed"
        elif not _ours(path):
            state = "not written by jobtunnel"
        elif path.read_bytes() != spec.data():
            state = "differs from this installation (`jobtunnel service install` updates it)"
        else:
            state = "installed"
        problems += state != "installed"
        ctx.say(f"{path}: {state}")
    if ctx.dry_run or ctx.root is not None:
        ctx.say("would run: " + "; ".join(str(c) for c in cmds.status))
        return 1 if problems else 0
    absent = _manager_absent(ctx, cmds)
    if absent:
        ctx.warn(f"jobtunnel: {absent}; {_how_to_start(target.platform)}")
        return 1
    for cmd in cmds.status:
        result = ctx.runner(cmd.argv)
        ctx.say(f"$ {shlex.join(cmd.argv)}\n{result.output}".rstrip())
    if ctx.runner(cmds.running.argv).returncode != 0:
        ctx.say("the daemon is not running as a login service")
        problems += 1
    return 1 if problems else 0


def main(
    action: str,
    platform: str | None = None,
    *,
    dry_run: bool = False,
    root: Path | None = None,
    runner: Runner = run_command,
    out: Callable[[str], None] = print,
) -> int:
    """The ``jobtunnel service`` command."""
    known: dict[str, Platform] = {p: p for p in PLATFORMS}
    chosen = host_platform() if platform is None else known.get(platform)
    if chosen is None:
        out(f"jobtunnel: unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")
        return 2
    ctx = Context(runner=runner, root=root, dry_run=dry_run, out=out)
    action_fn = {"install": install, "uninstall": uninstall, "status": status}[action]
    try:
        return action_fn(target_for(chosen), ctx)
    except (OSError, ValueError) as exc:
        out(f"jobtunnel: service {action}: {exc}")
        return 1
