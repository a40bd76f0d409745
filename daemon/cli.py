"""The ``jobtunnel`` command line.

Each subcommand is a small function taking the parsed arguments and returning an exit
status: 0 done, 1 something needs the user (a broken config), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from jobtunnel.daemon import __version__, paths
from jobtunnel.daemon.config import (
    Config,
    ConfigError,
    default_config_text,
    load_config,
    render_toml,
)
from jobtunnel.daemon.detect import Detector, Endpoint, EndpointSet, Rejection
from jobtunnel.daemon.logs import setup_logging

__all__ = ["main"]

log = logging.getLogger("jobtunnel")

CHUNK = 1 << 20
# Files at least this large get a progress line on an interactive terminal.
PROGRESS_FROM = 64 << 20

EXAMPLES = """\
examples:
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


def _read_chunks(path: Path, progress: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as handle:
        done = 0
        while chunk := handle.read(CHUNK):
            done += len(chunk)
            progress(done)
            yield chunk


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


def scan_file(path: Path, config: Config, rejected: Callable[[Rejection], None]) -> list[Endpoint]:
    """Endpoints still current at the end of ``path``; rejections go to ``rejected``."""
    detector = Detector(
        str(path),
        username_pattern=config.detect.username_pattern,
        allow_private_addresses=config.detect.allow_private_addresses,
    )
    current = EndpointSet()

    def take(findings: list[Endpoint | Rejection]) -> None:
        for finding in findings:
            if isinstance(finding, Rejection):
                rejected(finding)
            else:
                current.add(finding)

    for chunk in _read_chunks(path, _progress_line(path, sys.stderr)):
        take(detector.feed(chunk))
    take(detector.close())
    return list(current)


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
            endpoints = scan_file(path, config, lambda r: print(r, file=sys.stderr))
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


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` atomically (temp file, fsync, rename); never replace an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if path exists, unlike rename
    finally:
        os.unlink(tmp)


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
        _write_new(path, default_config_text())
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
    from jobtunnel.daemon.instance import AlreadyRunning
    from jobtunnel.daemon.service import Service
    from jobtunnel.daemon.tunnel import install_event_loop

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
    from jobtunnel.daemon.control import ControlError, call_sync

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
