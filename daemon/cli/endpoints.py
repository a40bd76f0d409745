"""Commands on endpoints: ``add``, ``connect``, ``disconnect``, ``reconnect``, ``forget``,
``pause``, ``resume``, ``trust``, ``switch``. Each is one request to the running daemon."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api.schema import EndpointView
from . import control
from .output import Fail, confirm, err, out

__all__ = [
    "add",
    "connect",
    "disconnect",
    "forget",
    "pause",
    "reconnect",
    "resume",
    "switch",
    "trust",
]

NAME_HELP = "a job id (e.g. qpWia) or user@host:port, as `jobtunnel status` shows it"
# What asyncssh's get_fingerprint("sha256") prints: unpadded base64 of 32 bytes.
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")

Run = Callable[[argparse.Namespace], int]


def _done(words: str, result: Any) -> int:
    names = result if isinstance(result, list) else [result]
    out(f"{words}: {', '.join(map(str, names))}" if names else f"{words}: nothing")
    return 0


def _request(cmd: str, words: str) -> Run:
    """The runner of a command that sends ``{"name": NAME}`` (or nothing without NAME)."""

    def run(args: argparse.Namespace) -> int:
        params = {"name": args.name} if args.name else {}
        return _done(words, control.call(args, cmd, **params))

    return run


def _named(parser: argparse.ArgumentParser, cmd: str, words: str, *, optional: bool) -> None:
    if optional:
        parser.add_argument("name", metavar="NAME", nargs="?", help=f"{NAME_HELP}; all without")
    else:
        parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.set_defaults(func=_request(cmd, words))


def add(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Add endpoints by hand: every endpoint found in a job log FILE, or one "
        "USER@HOST[:PORT] (port 22 by default). This also brings back a forgotten one."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel add ~/Downloads/job_qpWia_logs.tsv\n"
        "  jobtunnel add uprod_qpWia@54.1.2.3:32100"
    )
    parser.add_argument("target", metavar="FILE|USER@HOST[:PORT]")
    parser.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    target = Path(args.target)
    # The daemon may run with another working directory.
    sent = str(target.resolve()) if target.exists() else args.target
    return _done("added", control.call(args, "add", target=sent))


def connect(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Open an endpoint's tunnel now: undoes disconnect and pause, and opens an endpoint "
        "that waits as pending (past the limits on automatic connections)."
    )
    _named(parser, "connect", "connecting", optional=False)


def disconnect(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Close an endpoint's tunnel until `jobtunnel connect` or the next daemon start."
    )
    _named(parser, "disconnect", "closed", optional=False)


def forget(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Close an endpoint's tunnel and ignore the endpoint even when its log is read "
        "again. `jobtunnel add` brings it back."
    )
    _named(parser, "forget", "forgotten", optional=False)


def reconnect(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Reconnect now, skipping the wait of the reconnect backoff: one endpoint, or every "
        "open tunnel without NAME."
    )
    _named(parser, "reconnect", "reconnecting", optional=True)


def pause(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Close tunnels and keep them closed across daemon restarts, until "
        "`jobtunnel resume`: one endpoint, or all without NAME."
    )
    _named(parser, "pause", "paused", optional=True)


def resume(parser: argparse.ArgumentParser) -> None:
    parser.description = "Undo `jobtunnel pause`: one endpoint, or all without NAME."
    _named(parser, "resume", "resumed", optional=True)


def switch(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Move a job to the newer address a log file reported for it (a pending move: "
        "`jobtunnel status` shows it with the file it came from). A file never moves a "
        "known job by itself; the job's local ports go with it when it moves."
    )
    parser.epilog = "example:\n  jobtunnel switch qpWia"
    parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.set_defaults(func=run_switch)


def run_switch(args: argparse.Namespace) -> int:
    return _done("switching", control.call(args, "switch", name=args.name))


def trust(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Accept the host key an endpoint offered and jobtunnel refused (its cluster was "
        "rebuilt, or it is a new host of a known job). Without FINGERPRINT it shows the "
        "refused key's fingerprint and asks; with it, exactly that key is pinned and any "
        "other key is refused again. Compare the fingerprint with the cluster's own "
        "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on it) before you accept."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel trust qpWia                        show the refused key, ask y/N\n"
        "  jobtunnel trust qpWia SHA256:2nR0...         pin exactly this key"
    )
    parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.add_argument(
        "fingerprint",
        metavar="FINGERPRINT",
        nargs="?",
        help="SHA256:... of the key to pin, as `jobtunnel trust NAME` or `status` shows it",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="without FINGERPRINT: trust the refused key without asking (for scripts)",
    )
    parser.set_defaults(func=run_trust)


def endpoint_named(endpoints: tuple[EndpointView, ...], name: str) -> EndpointView:
    """The endpoint of a status snapshot that ``name`` means (as the daemon resolves it)."""
    name = name.strip()
    exact = [e for e in endpoints if e.name == name]
    matches = exact or [
        e for e in endpoints if name in (e.job_id, e.user) or name == f"{e.user}@{e.host}"
    ]
    if not matches:
        raise Fail(f"no endpoint matches {name!r} (`jobtunnel status` lists them)", 1)
    if len(matches) > 1:
        names = ", ".join(sorted(e.name for e in matches))
        raise Fail(f"{name!r} matches several endpoints: {names}; name one exactly")
    return matches[0]


def run_trust(args: argparse.Namespace) -> int:
    if args.fingerprint is not None:
        if not FINGERPRINT.fullmatch(args.fingerprint):
            raise Fail(
                f"{args.fingerprint!r} is not a SHA256 fingerprint "
                "(SHA256: and 43 characters, as `jobtunnel status` shows it)"
            )
        return _trust(args, args.name, args.fingerprint)
    snapshot, _ = control.status(args)
    endpoint = endpoint_named(snapshot.endpoints, args.name)
    name, fingerprint = endpoint.name, endpoint.refused_key
    if not fingerprint:
        raise Fail(f"{name} has no refused host key to trust (state {endpoint.state})", 1)
    err(f"{name} offered the host key {fingerprint}, which is not the one jobtunnel knows.")
    if not args.yes:
        answer = confirm(f"Trust {fingerprint} for {name}?")
        if answer is None:
            raise Fail(
                f"not asking without a terminal: `jobtunnel trust {name} {fingerprint}` "
                "pins that key (or add --yes)"
            )
        if not answer:
            err("nothing changed")
            return 1
    return _trust(args, name, fingerprint)


def _trust(args: argparse.Namespace, name: str, fingerprint: str) -> int:
    result = control.call(args, "trust", name=name, fingerprint=fingerprint)
    return _done(f"trusting {fingerprint} for", result)
