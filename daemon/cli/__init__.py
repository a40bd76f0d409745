"""The ``jobtunnel`` command line.

Each subcommand is a small function taking the parsed arguments and returning an exit
status: 0 done, 1 something needs the user (a broken config), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .. import __version__, paths
from ..config import (
    Config,
    ConfigError,
    default_config_text,
    load_config,
    render_toml,
)
from ..core.detect import Endpoint
from ..engine import passphrase
from ..files import write_new
from ..logs import setup_logging
from ..process.scan import scan_file
from ..setup import doctor, firstrun, keys, ppk

__all__ = ["main"]

log = logging.getLogger("jobtunnel")

# Files at least this large get a progress line on an interactive terminal.
PROGRESS_FROM = 64 << 20

EXAMPLES = """\
examples:
  jobtunnel init                                   first run: key, config, folder, Rescale steps
  jobtunnel keys show --copy                       the public key for Rescale, on the clipboard
  jobtunnel doctor                                 what is missing, each with its fix
  jobtunnel scan ~/Downloads/job_qpWia_logs.tsv    what would jobtunnel connect to?
  jobtunnel scan --json ~/JobLogs/*.log            the same, one JSON object per line
  jobtunnel config init                            write the commented default config
  jobtunnel config check                           validate it (file, line and key of errors)
  jobtunnel run                                    the daemon (the login service runs it)
  jobtunnel status                                 every cluster and tunnel, with its state
  jobtunnel reconnect qpWia                        reconnect job qpWia's tunnel now

Files: the config is {config}
(override with --config or JOBTUNNEL_CONFIG).
"""


class Fail(Exception):
    """A one-line error for the user, with the exit status to leave with."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise Fail(f"the config file has errors (nothing was done):\n{exc}", 1) from None


# -- scan ------------------------------------------------------------------------------


def _progress_line(path: Path, stream: IO[str]) -> Callable[[int], None]:
    """A throttled "scanning FILE: 40% (400 MB of 1000 MB)" line, when it helps."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size < PROGRESS_FROM or not stream.isatty():
        return lambda done: None
    last = [0.0]

    def show(done: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and done < size:
            return
        last[0] = now
        end = "\n" if done >= size else ""
        stream.write(
            f"\rscanning {path}: {100 * done // size}% ({done >> 20} of {size >> 20} MiB){end}"
        )
        stream.flush()

    return show


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def cmd_scan(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    status = 0
    found: list[Endpoint] = []
    for name in args.files:
        path = Path(name)
        if path.is_dir():
            print(
                f"jobtunnel: {path}: is a folder; name the files in it (e.g. {path}/*.log)",
                file=sys.stderr,
            )
            status = 2
            continue
        try:
            endpoints = scan_file(
                path,
                config.detect,
                lambda r: print(r, file=sys.stderr),
                _progress_line(path, sys.stderr),
            )
        except OSError as exc:
            print(f"jobtunnel: {path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            for endpoint in endpoints:
                print(json.dumps(endpoint.to_dict()), flush=True)
        found += endpoints
    if not args.json:
        if found:
            rows = [
                [
                    e.job_id or "-",
                    f"{e.user}@{e.host}:{e.port}",
                    f"{e.source}:{e.line}",
                    e.notebook_url or "",
                ]
                for e in found
            ]
            print(_table(rows, ["JOB", "ENDPOINT", "FOUND AT", "NOTEBOOK"]))
        else:
            print("no cluster endpoint found", file=sys.stderr)
    return status


# -- config ----------------------------------------------------------------------------


def cmd_config_path(args: argparse.Namespace) -> int:
    path = args.config or paths.config_file()
    print(path)
    if not path.exists():
        print(
            "(not created yet: every default applies; `jobtunnel config init` writes it)",
            file=sys.stderr,
        )
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    config, path = _load(args)
    if args.json:
        print(json.dumps(config.to_dict(), indent=2))
    else:
        print(f"# effective configuration, from {path}" + ("" if path.exists() else " (defaults)"))
        print(render_toml(config), end="")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    _, path = _load(args)
    print(f"{path}: OK" if path.exists() else f"{path}: not present; every default applies")
    return 0


def cmd_config_init(args: argparse.Namespace) -> int:
    path = args.config or paths.config_file()
    if path.exists():
        print(f"{path} exists; left unchanged (`jobtunnel config check` validates it)")
        return 0
    try:
        write_new(path, default_config_text())
    except FileExistsError:
        print(f"{path} exists; left unchanged")
        return 0
    except OSError as exc:
        raise Fail(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path}: every key is commented out at its default; edit what you need")
    return 0


# -- the daemon and talking to it -------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config, path = _load(args)
    log_path = setup_logging(verbose=args.verbose, to_file=True)
    # Imported here: the daemon's dependencies (asyncssh, watchdog, APScheduler) would
    # slow down every other command.
    from ..engine.tunnel import install_event_loop
    from ..process.instance import AlreadyRunning
    from ..process.service import Service

    loop_name = install_event_loop(config.daemon.event_loop)
    log.info("config %s, log %s, event loop %s", path, log_path, loop_name)

    async def serve() -> None:
        await Service(config, args.config).run()

    try:
        asyncio.run(serve())
    except AlreadyRunning as exc:
        raise Fail(str(exc), 1) from None
    return 0


def _call(args: argparse.Namespace, cmd: str, **params: Any) -> Any:
    from ..api.client import ControlError, call_sync

    try:
        transport = load_config(args.config)[0].daemon.control
    except ConfigError:
        # The running daemon keeps the config it loaded; a broken file must not cut the
        # user off from it.
        print(
            "jobtunnel: warning: the config file has errors (`jobtunnel config check`)",
            file=sys.stderr,
        )
        transport = "auto"
    try:
        return call_sync(cmd, params, transport=transport)
    except ControlError as exc:
        raise Fail(str(exc), 1) from None


def _ago(epoch: float | None) -> str:
    if not epoch:
        return "-"
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _forward_words(fwd: dict[str, Any]) -> str:
    bind = fwd["bind_address"]
    host = "localhost" if bind in ("127.0.0.1", "::1", "localhost") else bind
    local = f"{host}:{fwd['local_port']}" if fwd["local_port"] else f"{host}:-"
    remote = "socks" if fwd["dynamic"] else str(fwd["remote_port"])
    clients = f", {fwd['clients']} clients" if fwd.get("clients") else ""
    return f"{local} -> {remote} {fwd['state']}{clients}"


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, "status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    daemon = status["daemon"]
    print(f"jobtunnel {daemon['version']} (pid {daemon['pid']}): {daemon['summary']}")
    print(f"watching {', '.join(daemon['watch']['folders'])} ({daemon['watch']['mode']})")
    if daemon.get("save_error"):
        print(f"warning: {daemon['save_error']}")
    if not status["endpoints"]:
        print(
            "no cluster endpoint yet: download a job log into a watched folder, "
            "or `jobtunnel add FILE`"
        )
        return 0
    rows = []
    for ep in status["endpoints"]:
        forwards = "; ".join(_forward_words(f) for f in ep["forwards"])
        rows.append(
            [
                ep["job_id"] or "-",
                ep["name"],
                ep["state"],
                _ago(ep["since"]),
                forwards,
                ep["last_error"] or "",
            ]
        )
    print(_table(rows, ["JOB", "ENDPOINT", "STATE", "SINCE", "FORWARDS", "LAST ERROR"]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _call(args, "list")
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    rows = [
        [
            r["job_id"] or "-",
            f"{r['user']}@{r['host']}:{r['port']}",
            r["action"],
            ", ".join(f"{spec}->{port}" for spec, port in r["ports"].items()),
            f"{r['source']}:{r['line']}",
        ]
        for r in records
    ]
    print(
        _table(rows, ["JOB", "ENDPOINT", "ACTION", "PORTS", "FOUND AT"])
        if rows
        else "no endpoint known yet"
    )
    return 0


def _simple(cmd: str, done: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        params = {"name": args.name} if getattr(args, "name", None) else {}
        if cmd == "add":
            target = Path(args.target)
            # The daemon may run with another working directory.
            params = {"target": str(target.resolve()) if target.exists() else args.target}
        result = _call(args, cmd, **params)
        names = result if isinstance(result, list) else [result]
        print(f"{done}: {', '.join(map(str, names))}" if names else f"{done}: nothing")
        return 0

    return run


# -- keys, first run, doctor ------------------------------------------------------------


def _key_fail(exc: Exception) -> Fail:
    return Fail(str(exc), 1)


def _show_public(path: Path) -> keys.OwnKey:
    """Print the public key line (alone on stdout, for pasting or piping), fingerprint aside."""
    try:
        own = keys.public_key(path)
    except keys.KeyFileError as exc:
        if "assphrase" not in str(exc):
            raise _key_fail(exc) from None
        # No .pub beside an encrypted key: the public half needs the passphrase.
        phrase = passphrase.ask(f"Passphrase for {path}: ")
        try:
            own = keys.public_key(path, phrase)
        except keys.KeyFileError as again:
            raise _key_fail(again) from None
    print(own.line)
    print(f"{own.fingerprint}  ({path})", file=sys.stderr)
    return own


def _own_key(args: argparse.Namespace) -> Path:
    """--file, else jobtunnel's own key, else the first key the engine would offer."""
    if getattr(args, "file", None):
        return Path(args.file).expanduser()
    found = keys.own_keys() or doctor.usable_keys(_load(args)[0])
    if not found:
        raise Fail("no key yet: `jobtunnel keys generate` (or `jobtunnel init`) makes one", 1)
    return found[0]


def cmd_keys_generate(args: argparse.Namespace) -> int:
    phrase = None
    if args.passphrase:
        try:
            phrase = passphrase.ask_new()
        except ValueError as exc:
            raise Fail(str(exc)) from None
    try:
        path = keys.generate(args.type, args.bits, phrase)
    except keys.KeyFileError as exc:
        raise _key_fail(exc) from None
    print(f"wrote {path} (private, mode 0600) and {path}.pub", file=sys.stderr)
    _show_public(path)
    if phrase:
        print(
            f"the daemon cannot type the passphrase: `ssh-add {path}` (ssh-agent) or "
            "`jobtunnel keys remember` (OS keyring)",
            file=sys.stderr,
        )
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    own = _show_public(_own_key(args))
    if args.copy:
        tool = keys.copy_to_clipboard(own.line)
        if tool:
            print(f"copied to the clipboard ({tool})", file=sys.stderr)
        else:
            print(
                "no clipboard here (xclip, xsel or wl-copy with a display; pbcopy; clip): "
                "select the line above and copy it",
                file=sys.stderr,
            )
    return 0


def cmd_keys_import(args: argparse.Namespace) -> int:
    source = Path(args.file).expanduser()
    phrase = None
    try:
        encrypted = ppk.needs_passphrase(source.read_bytes())
    except OSError as exc:
        raise Fail(f"{source}: cannot read: {exc.strerror or exc}") from None
    except ppk.PpkError as exc:
        raise Fail(f"{source}: {exc}") from None
    if encrypted:
        phrase = passphrase.ask(f"Passphrase for {source}: ")
        if not phrase:
            raise Fail(f"{source} is encrypted: run this on a terminal to type its passphrase")
    output = Path(args.output).expanduser() if args.output else None
    try:
        path = keys.import_ppk(source, phrase, output)
    except keys.KeyFileError as exc:
        raise _key_fail(exc) from None
    kept = ", same passphrase" if phrase else ""
    print(f"imported {source} -> {path} (OpenSSH format, mode 0600{kept})", file=sys.stderr)
    _show_public(path)
    return 0


def cmd_keys_remember(args: argparse.Namespace) -> int:
    path = _own_key(args)
    try:
        if args.forget:
            gone = passphrase.forget(path)
            print(f"{'forgot' if gone else 'nothing remembered for'} {path}")
            return 0
        try:
            keys.read_private(path)
        except keys.KeyFileError as exc:
            if "assphrase" not in str(exc):
                raise _key_fail(exc) from None
        else:
            print(f"{path} is not encrypted: there is no passphrase to remember")
            return 0
        phrase = passphrase.ask(f"Passphrase for {path}: ")
        if not phrase:
            raise Fail("a passphrase can only be typed on a terminal")
        try:
            keys.read_private(path, phrase)
        except keys.KeyFileError:
            raise Fail(f"wrong passphrase for {path}; nothing was stored", 1) from None
        backend = passphrase.remember(path, phrase)
    except passphrase.KeyringUnavailable as exc:
        raise Fail(str(exc), 1) from None
    print(f"remembered in the OS keyring ({backend}); the daemon now unlocks {path}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    phrase = None
    if args.passphrase:
        try:
            phrase = passphrase.ask_new()
        except ValueError as exc:
            raise Fail(str(exc)) from None
    try:
        result = firstrun.init(args.config, phrase)
    except (keys.KeyFileError, OSError) as exc:
        raise Fail(f"init stopped: {exc}", 1) from None
    for line in result.done:
        print(f"made: {line}")
    for line in result.kept:
        print(f"kept: {line}")
    if result.config_error:
        print(f"the config file has errors; fix them, then run init again:\n{result.config_error}")
    print()
    print(firstrun.rescale_steps(result.public, result.folders))
    if result.service_installed:
        print(f"login service: installed ({result.service_file})")
    elif "service" in args.commands and not args.no_service and sys.stdin.isatty():
        answer = input("Start jobtunnel at every login (jobtunnel service install)? [Y/n] ")
        if answer.strip().lower() in ("", "y", "yes"):
            extra = ["--config", str(args.config)] if args.config else []
            return main([*extra, "service", "install"]) or (1 if result.config_error else 0)
    else:
        print("login service: to start jobtunnel at every login, run: jobtunnel service install")
    print("then `jobtunnel doctor` checks everything")
    return 1 if result.config_error else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    results = doctor.run_checks(args.config)
    for check in results:
        print(check)
    failing = sum(c.status == "fail" for c in results)
    print(f"{failing} to fix" if failing else "all good")
    return 1 if failing else 0


def _add_setup_commands(sub: Any) -> None:
    """The keys, init and doctor subcommands."""
    keys_cmd = sub.add_parser(
        "keys",
        help="jobtunnel's SSH key: generate, show, import from PuTTY, remember its passphrase",
        description=(
            "jobtunnel's own key lives in "
            f"{paths.key_file().parent} (id_ed25519; id_rsa or id_ecdsa beside it). "
            "Its public key goes into Rescale: Account -> Job Settings -> SSH Public Key."
        ),
    )
    keys_sub = keys_cmd.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = keys_sub.add_parser(
        "generate",
        help="make a new key (never overwrites one)",
        description=(
            "Make jobtunnel's own key in OpenSSH format: private key mode 0600 in a 0700 "
            "folder, public key beside it. An existing key is never overwritten."
        ),
    )
    gen.add_argument(
        "--type", choices=("ed25519", "rsa"), default="ed25519", help="key type (ed25519)"
    )
    gen.add_argument("--bits", type=int, help=f"rsa key size ({keys.DEFAULT_RSA_BITS})")
    gen.add_argument(
        "--passphrase",
        action="store_true",
        help="ask for a passphrase (then use ssh-agent or `keys remember` for the daemon)",
    )
    gen.set_defaults(func=cmd_keys_generate)
    show = keys_sub.add_parser(
        "show",
        help="print the public key to paste into Rescale, with its fingerprint",
        description=(
            "Print the one-line public key on stdout (its SHA256 fingerprint on stderr). "
            "Paste it into Rescale: Account -> Job Settings -> SSH Public Key."
        ),
    )
    show.add_argument("--copy", action="store_true", help="also put it on the clipboard")
    show.add_argument("--file", metavar="KEY", help="another private key than jobtunnel's own")
    show.set_defaults(func=cmd_keys_show)
    imp = keys_sub.add_parser(
        "import",
        help="convert a PuTTYgen .ppk key to jobtunnel's own OpenSSH key",
        description=(
            "Read a PuTTY key (PPK version 2 or 3, RSA, ECDSA or Ed25519, encrypted or "
            "not; the MAC is verified) and write it in OpenSSH format as jobtunnel's own "
            "key, keeping its passphrase. An existing key is never overwritten."
        ),
    )
    imp.add_argument("file", metavar="FILE.ppk", help="the PuTTY private key file")
    imp.add_argument("--output", metavar="PATH", help="write here instead of the own key path")
    imp.set_defaults(func=cmd_keys_import)
    rem = keys_sub.add_parser(
        "remember",
        help="keep the key's passphrase in the OS keyring for the daemon",
        description=(
            "Ask the passphrase of an encrypted key once, check it, and store it in the OS "
            "keyring (needs the optional 'keyring' package), so that the daemon can unlock "
            "the key at login. Never written to the config, the state file or a log."
        ),
    )
    rem.add_argument("--file", metavar="KEY", help="another private key than jobtunnel's own")
    rem.add_argument("--forget", action="store_true", help="remove the remembered passphrase")
    rem.set_defaults(func=cmd_keys_remember)

    init = sub.add_parser(
        "init",
        help="first run: make the key, config and watched folder; show the Rescale steps",
        description=(
            "Make what is missing: jobtunnel's own key, the commented default config, the "
            "watched folders. Then print the public key and what to set in Rescale, and "
            "offer to install the login service. Running it again changes nothing that "
            "exists. No network call is made."
        ),
    )
    init.add_argument("--passphrase", action="store_true", help="protect a new key with one")
    init.add_argument(
        "--no-service", action="store_true", help="do not offer to install the login service"
    )
    init.set_defaults(func=cmd_init)
    sub.add_parser(
        "doctor",
        help="check everything a working tunnel needs, each with its fix",
        description=(
            "One line per check: key present and private, public key, config valid, "
            "watched folders, daemon running, login service installed, tray backend, "
            "local ports free. Exit status 1 when something needs you."
        ),
    ).set_defaults(func=cmd_doctor)


# -- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobtunnel",
        description=(
            "Finds Rescale cluster SSH endpoints (uprod_<jobid>@host, port) in downloaded job "
            "logs and keeps SSH port-forwards to them up."
        ),
        epilog=EXAMPLES.format(config=paths.config_file()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jobtunnel {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="config file to use instead of the default (see below)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    scan = sub.add_parser(
        "scan",
        help="show the cluster endpoints found in job log files",
        description=(
            "Read job log files (Rescale Logs panel exports, saved pages, ssh -v output...) "
            "and show the cluster endpoints the daemon would connect to: the newest one per "
            "job. Rejected candidates (private addresses, bad ports...) are listed on stderr "
            "with the reason. Exit status 2 if a file could not be read."
        ),
    )
    scan.add_argument("files", nargs="+", metavar="FILE", help="job log files to read")
    scan.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per endpoint and line: file, line, user, host, "
        "port, job_id, notebook_url (when named)",
    )
    scan.set_defaults(func=cmd_scan)

    run = sub.add_parser(
        "run",
        help="run the daemon in the foreground (what the login service starts)",
        description=(
            "Watch the configured folders for job logs, keep tunnels to every detected "
            "cluster up, and serve the control API that the CLI and the tray use. Logs go "
            "to stderr and to a rotating file in the user log folder. SIGTERM stops it "
            "cleanly; SIGHUP reloads the config."
        ),
    )
    # SUPPRESS: without the flag here, the top-level -v must not be reset to False.
    run.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug details"
    )
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="the daemon and every tunnel, with their state")
    status.add_argument(
        "--json", action="store_true", help='one JSON object: {"daemon": {...}, "endpoints": [...]}'
    )
    status.set_defaults(func=cmd_status)
    listing = sub.add_parser("list", help="every known endpoint, forgotten ones included")
    listing.add_argument("--json", action="store_true", help="as JSON")
    listing.set_defaults(func=cmd_list)

    add = sub.add_parser(
        "add",
        help="add the endpoints of a job log, or USER@HOST[:PORT]",
        description="Add endpoints by hand; this also brings back a forgotten one.",
    )
    add.add_argument("target", metavar="FILE|USER@HOST[:PORT]")
    add.set_defaults(func=_simple("add", "added"))
    name_help = "a job id (e.g. qpWia) or user@host:port"
    for name, helptext, done in (
        ("connect", "connect an endpoint now (undoes disconnect and pause)", "connecting"),
        ("disconnect", "close an endpoint's tunnel until connect or a daemon restart", "closed"),
        (
            "forget",
            "close an endpoint's tunnel; ignore it even when its log is read again",
            "forgotten",
        ),
        (
            "trust",
            "accept an endpoint's changed host key (its cluster was rebuilt)",
            "trusting the new host key of",
        ),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("name", metavar="NAME", help=name_help)
        cmd.set_defaults(func=_simple(name, done))
    for name, helptext, done in (
        (
            "reconnect",
            "reconnect now, skipping the backoff wait (all without NAME)",
            "reconnecting",
        ),
        (
            "pause",
            "close tunnels and keep them closed across restarts (all without NAME)",
            "paused",
        ),
        ("resume", "undo pause (all without NAME)", "resumed"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("name", metavar="NAME", nargs="?", help=name_help)
        cmd.set_defaults(func=_simple(name, done))
    sub.add_parser("stop", help="stop the daemon").set_defaults(func=_simple("stop", "daemon"))

    def cmd_tray(args: argparse.Namespace) -> int:
        from jobtunnel.tray.app import run_tray  # lazily: pystray wants a display

        return run_tray(args.config, verbose=args.verbose)

    sub.add_parser(
        "tray", help="the system-tray icon and menu (a client of the running daemon)"
    ).set_defaults(func=cmd_tray)

    config = sub.add_parser(
        "config",
        help="find, write, show or validate the config file",
        description="The config file: one TOML file, every key optional.",
    )
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_sub.add_parser("path", help="print where the config file is").set_defaults(
        func=cmd_config_path
    )
    show = config_sub.add_parser("show", help="print the effective config (file plus defaults)")
    show.add_argument("--json", action="store_true", help="as JSON")
    show.set_defaults(func=cmd_config_show)
    config_sub.add_parser(
        "check", help="validate the config; errors name the file, line and key"
    ).set_defaults(func=cmd_config_check)
    config_sub.add_parser(
        "init", help="write the commented default config (never overwrites)"
    ).set_defaults(func=cmd_config_init)

    def cmd_service(args: argparse.Namespace) -> int:
        from ..setup import loginservice  # lazily: only this command needs it

        return loginservice.main(args.action, args.platform, dry_run=args.dry_run, root=args.root)

    service = sub.add_parser(
        "service",
        help="start jobtunnel at every login (systemd user units, LaunchAgents, logon tasks)",
        description=(
            "install: write the login-service files for this installation (its Python, its "
            "paths), then enable and start them; running it again updates them. uninstall: "
            "stop them and remove exactly the files install wrote. status: what is installed "
            "and running. Exit status 1 when the service manager could not do it (the files "
            "are then still written, and it says how to start jobtunnel instead)."
        ),
    )
    service.add_argument("action", choices=["install", "uninstall", "status"])
    service.add_argument(
        "--dry-run", action="store_true", help="print the files and commands; change nothing"
    )
    service.add_argument(
        "--platform",
        choices=["linux", "macos", "windows"],
        help="render another platform's files (with --dry-run or --root)",
    )
    service.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="write the files under DIR as if it were / and run no command (for packaging "
        "and tests)",
    )
    service.set_defaults(func=cmd_service)

    _add_setup_commands(sub)
    # Which subcommands exist (init offers `service install` only when it does).
    parser.set_defaults(commands=frozenset(sub.choices))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is not cmd_run:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        status: int = args.func(args)
    except Fail as exc:
        print(f"jobtunnel: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `jobtunnel scan ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0
    return status
