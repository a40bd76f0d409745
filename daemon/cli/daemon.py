"""The daemon itself: ``run``, ``stop``, ``status``, ``list``, ``logs``."""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import time

from ..api.schema import Decision, EndpointView, ForwardView
from ..logs import log_file, setup_logging
from . import control
from .config import load
from .output import Fail, ago, err, out, print_json, table

__all__ = ["listing", "logs", "run", "status", "stop"]

log = logging.getLogger("jobtunnel")


def run(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Watch the configured folders for job logs, keep tunnels to every detected "
        "cluster up, and serve the control API that the CLI and the tray use. Logs go "
        "to stderr and to a rotating file in the user log folder (`jobtunnel logs`). "
        "SIGTERM stops it cleanly; SIGHUP reloads the config. Exit status 1 when another "
        "daemon of this user is already running."
    )
    # SUPPRESS: without the flag here, the top-level -v must not be reset to False.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug details"
    )
    parser.set_defaults(func=run_run)


def run_run(args: argparse.Namespace) -> int:
    config, path = load(args)
    log_path = setup_logging(verbose=args.verbose, to_file=True)
    # The daemon's dependencies (asyncssh, watchdog, APScheduler) only for this command.
    from ..engine.loop import install_event_loop
    from ..process.deadline import StopDeadline
    from ..process.instance import AlreadyRunning
    from ..process.service import Service

    loop_name = install_event_loop(config.daemon.event_loop)
    log.info("config %s, log %s, event loop %s", path, log_path, loop_name)
    deadline = StopDeadline()

    async def serve() -> None:
        await Service(config, args.config, deadline=deadline).run()

    try:
        asyncio.run(serve())
    except AlreadyRunning as exc:
        raise Fail(str(exc), 1) from None
    # Still armed: it covers the interpreter's exit too (joining threads).
    return 0


def stop(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Ask the running daemon to stop: tunnels close, ports are released. The login "
        "service does not restart a daemon stopped this way."
    )
    parser.set_defaults(func=run_stop)


def run_stop(args: argparse.Namespace) -> int:
    out(f"daemon: {control.call(args, 'stop')}")
    return 0


def status(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The running daemon (version, pid, watched folders) and one row per endpoint: "
        "its job, state, since when, its forwards (local port -> remote port, clients) and "
        "the last error. Exit status 1 when the daemon is not running."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel status\n"
        "  jobtunnel status --json | jq '.endpoints[] | {name, state}'"
    )
    parser.add_argument(
        "--json", action="store_true", help='one JSON object: {"daemon": {...}, "endpoints": [...]}'
    )
    parser.set_defaults(func=run_status)


def _forward_words(fwd: ForwardView) -> str:
    bind = fwd.bind_address
    host = "localhost" if bind in ("127.0.0.1", "::1", "localhost") else bind
    local = f"{host}:{fwd.local_port}" if fwd.local_port else f"{host}:-"
    if fwd.tls and fwd.local_port:
        local = f"https://{local}"  # the service answered as TLS: http:// would fail
    remote = "socks" if fwd.dynamic else str(fwd.remote_port)
    if fwd.name:
        remote += f" ({fwd.name})"
    clients = f", {fwd.clients} clients" if fwd.clients else ""
    return f"{local} -> {remote} {fwd.state}{clients}"


def _notes(ep: EndpointView) -> list[str]:
    """What waits for the user on this endpoint, with the command that settles it."""
    who = ep.job_id or ep.name
    notes = []
    if ep.pending_move is not None:
        move, src = ep.pending_move, ep.pending_move.source
        where = f"{src.path}:{src.line}" if src.path else src.kind
        notes.append(
            f"{who} reports a new address {move.host}:{move.port} (from {where}): "
            f"`jobtunnel switch {who}` moves it"
        )
    if ep.refused_key is not None:
        notes.append(
            f"{who} offered the host key {ep.refused_key}, which was refused: "
            f"`jobtunnel trust {who}` shows it and asks"
        )
    if ep.action == Decision.PENDING:
        reason = ep.waiting_reason or "waits for you"
        notes.append(f"{who} is not connected ({reason}): `jobtunnel connect {who}` opens it")
    return notes


def run_status(args: argparse.Namespace) -> int:
    snapshot, raw = control.status(args)
    if args.json:
        print_json(raw)
        return 0
    daemon = snapshot.daemon
    out(f"jobtunnel {daemon.version} (pid {daemon.pid}): {daemon.summary}")
    out(f"watching {', '.join(daemon.watch.folders)} ({daemon.watch.mode})")
    if daemon.rescale is not None and daemon.rescale.state != "off":
        out(daemon.rescale.line(time.time()))
    if daemon.save_error:
        out(f"warning: {daemon.save_error}")
    if not snapshot.endpoints:
        out(
            "no cluster endpoint yet: download a job log into a watched folder, "
            "or `jobtunnel add FILE`"
        )
        return 0
    rows = [
        [
            ep.job_label or "-",
            ep.name,
            ep.state,
            ago(ep.since),
            "; ".join(_forward_words(f) for f in ep.forwards),
            ep.last_error or "",
        ]
        for ep in snapshot.endpoints
    ]
    out(table(rows, ["JOB", "ENDPOINT", "STATE", "SINCE", "FORWARDS", "LAST ERROR"]))
    checks = [
        f"{ep.job_id or ep.name}: checked {ago(ep.checked.at)} ({ep.checked.reason}): "
        f"{ep.checked.outcome}"
        for ep in snapshot.endpoints
        if ep.checked is not None
    ]
    if checks:
        out()
        for line in checks:
            out(line)
    notes = [note for ep in snapshot.endpoints for note in _notes(ep)]
    if notes:
        out()
        for note in notes:
            out(note)
    return 0


def listing(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Every endpoint the daemon knows, forgotten ones included: its job, the user's "
        "decision (active, paused, forgotten...), its sticky local ports and where it was "
        "found. --json passes the daemon's records through unchanged."
    )
    parser.add_argument("--json", action="store_true", help="the daemon's records, as JSON")
    parser.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    records = control.call(args, "list")
    if args.json:
        print_json(records)
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
    out(
        table(rows, ["JOB", "ENDPOINT", "ACTION", "PORTS", "FOUND AT"])
        if rows
        else "no endpoint known yet"
    )
    return 0


def logs(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"Print the end of the daemon's log file ({log_file()}; it rotates at 5 MiB, "
        "three old files kept beside it)."
    )
    parser.add_argument(
        "-n", "--lines", type=int, default=40, metavar="N", help="how many lines (40)"
    )
    parser.add_argument("--path", action="store_true", help="print only where the log is")
    parser.set_defaults(func=run_logs)


def run_logs(args: argparse.Namespace) -> int:
    path = log_file()
    if args.path:
        out(str(path))
        return 0
    if args.lines < 1:
        raise Fail("--lines needs a count of 1 or more")
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            tail = collections.deque(lines, maxlen=args.lines)
    except FileNotFoundError:
        err(f"no log yet at {path}: the daemon writes it once `jobtunnel run` starts")
        return 0
    except OSError as exc:
        raise Fail(f"{path}: cannot read: {exc.strerror or exc}", 1) from None
    out("".join(tail), end="")
    return 0
