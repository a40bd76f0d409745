"""The ``jobtunnel`` command line.

:data:`COMMANDS` is the one table of commands: its name, the module of its group and the
function there that declares its arguments (and sets ``func``, its runner), its help line
and its group. Only the module of the command being run is imported, so ``jobtunnel
--help`` or ``jobtunnel status`` never loads asyncssh, watchdog, APScheduler or pystray.

A runner takes the parsed arguments and returns an exit status: 0 done, 1 something needs
the user (a broken config, a daemon that is not running), 2 bad input or usage.

To add a command: write its function in the module of its group (``def name(parser)``:
add the arguments, ``parser.set_defaults(func=runner)``) and add its row here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, paths
from ..logs import setup_logging
from .output import Fail, err, streams_missing

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

log = logging.getLogger("jobtunnel.cli")


@dataclass(frozen=True)
class Command:
    """One ``jobtunnel NAME``: where it is declared, its help line, its group."""

    name: str
    module: str  # in this package
    function: str  # ``function(parser)`` declares the arguments and sets ``func``
    help: str
    group: str


COMMANDS: tuple[Command, ...] = (
    Command(
        "init",
        "setup",
        "init",
        "first run: make the key, config and watched folder; show the Rescale steps",
        "setting up",
    ),
    Command(
        "doctor",
        "setup",
        "doctor_command",
        "check everything a working tunnel needs, each with its fix",
        "setting up",
    ),
    Command(
        "keys",
        "keys",
        "keys_command",
        "jobtunnel's SSH key: generate, show, import from PuTTY, remember its passphrase",
        "setting up",
    ),
    Command(
        "config", "config", "config", "find, write, show or validate the config file", "setting up"
    ),
    Command(
        "service",
        "service",
        "service",
        "start jobtunnel at every login (systemd user units, LaunchAgents, logon tasks)",
        "setting up",
    ),
    Command(
        "scan", "scan", "scan", "show the cluster endpoints found in job log files", "setting up"
    ),
    Command(
        "run",
        "daemon",
        "run",
        "run the daemon in the foreground (what the login service starts)",
        "the daemon",
    ),
    Command("stop", "daemon", "stop", "stop the daemon", "the daemon"),
    Command(
        "status", "daemon", "status", "the daemon and every tunnel, with their state", "the daemon"
    ),
    Command(
        "list", "daemon", "listing", "every known endpoint, forgotten ones included", "the daemon"
    ),
    Command("logs", "daemon", "logs", "the end of the daemon's log file", "the daemon"),
    Command(
        "tray",
        "tray",
        "tray",
        "the system-tray icon and menu (a client of the running daemon)",
        "the daemon",
    ),
    Command(
        "add",
        "endpoints",
        "add",
        "add the endpoints of a job log, or USER@HOST[:PORT]",
        "endpoints",
    ),
    Command(
        "connect",
        "endpoints",
        "connect",
        "connect an endpoint now (undoes disconnect and pause; opens a pending one)",
        "endpoints",
    ),
    Command(
        "disconnect",
        "endpoints",
        "disconnect",
        "close an endpoint's tunnel until connect or a daemon restart",
        "endpoints",
    ),
    Command(
        "reconnect",
        "endpoints",
        "reconnect",
        "reconnect now, skipping the backoff wait (all without NAME)",
        "endpoints",
    ),
    Command(
        "pause",
        "endpoints",
        "pause",
        "close tunnels and keep them closed across restarts (all without NAME)",
        "endpoints",
    ),
    Command("resume", "endpoints", "resume", "undo pause (all without NAME)", "endpoints"),
    Command(
        "forget",
        "endpoints",
        "forget",
        "close an endpoint's tunnel; ignore it even when its log is read again",
        "endpoints",
    ),
    Command(
        "trust",
        "endpoints",
        "trust",
        "accept the host key an endpoint offered (shown by fingerprint) after a refusal",
        "endpoints",
    ),
    Command(
        "ssh-config",
        "sshconfig",
        "ssh_config",
        "the ssh_config of every live cluster; --install Includes it from ~/.ssh/config",
        "terminals and files",
    ),
    Command(
        "ssh",
        "sshconfig",
        "ssh",
        "a terminal (or COMMAND) on a cluster: the system's ssh with jobtunnel's settings",
        "terminals and files",
    ),
    Command("scp", "sshconfig", "scp", "copy files: scp FILE NAME:PATH", "terminals and files"),
    Command("sftp", "sshconfig", "sftp", "an sftp session on a cluster", "terminals and files"),
    Command(
        "switch",
        "endpoints",
        "switch",
        "move a job to the newer address a log reported (a pending move)",
        "endpoints",
    ),
    Command(
        "services",
        "services",
        "services",
        "what a cluster serves (found over its tunnel): forwarded, offered, gone",
        "endpoints",
    ),
    Command(
        "forward",
        "services",
        "forward",
        "forward a port of a cluster (one `services` offers), now and at every start",
        "endpoints",
    ),
    Command(
        "rescale",
        "rescale",
        "rescale",
        "the Rescale API as a source: login, logout, status, jobs, refresh",
        "setting up",
    ),
)

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
  jobtunnel ssh qpWia                              a terminal on job qpWia's cluster

`jobtunnel COMMAND --help` explains each command.
Files: the config is {config}
(override with --config or JOBTUNNEL_CONFIG).
"""


class _Formatter(argparse.HelpFormatter):
    """Wraps a description's paragraphs; keeps an epilog's lines (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            part
            if "\n" in part
            else textwrap.fill(part, width, initial_indent=indent, subsequent_indent=indent)
            for part in text.split("\n\n")
        )


def _command_list() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = ["commands:"]
    groups = dict.fromkeys(c.group for c in COMMANDS)
    for group in groups:
        lines.append(f"  {group}:")
        lines += [f"    {c.name:<{width}}  {c.help}" for c in COMMANDS if c.group == group]
    return "\n".join(lines)


def _chosen(argv: Sequence[str]) -> str | None:
    """The command word in ``argv``: the first word that is not a global option (or the
    value of ``--config``)."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if word.startswith("--") and "=" not in word and len(word) > 3:
            if "--config".startswith(word):
                next(words, None)  # its value
            continue
        if not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own arguments are declared (the others' modules
    are not imported), which is all that parsing a command line needs."""
    parser = argparse.ArgumentParser(
        prog="jobtunnel",
        description=(
            "Finds Rescale cluster SSH endpoints (uprod_<jobid>@host, port) in downloaded job "
            "logs and keeps SSH port-forwards to them up."
        ),
        epilog=_command_list() + "\n\n" + EXAMPLES.format(config=paths.config_file()),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"jobtunnel {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="config file to use instead of the default (see below)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        help="one of the commands below",
    )
    for cmd in COMMANDS:
        # No help= here: the grouped list in the epilog names them.
        each = sub.add_parser(cmd.name, description=cmd.help, formatter_class=_Formatter)
        if cmd.name == command:
            declare: Callable[[argparse.ArgumentParser], None] = getattr(
                importlib.import_module(f".{cmd.module}", __name__), cmd.function
            )
            declare(each)
    return parser


def _log_to(verbose: bool) -> None:
    if streams_missing():
        # pythonw.exe: no console; what would have been printed goes to the log file.
        setup_logging(verbose=verbose, to_file=True)
    else:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``jobtunnel [--config PATH] [-v] COMMAND ...``; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(_chosen(words)).parse_args(words)
    except SystemExit as exc:
        if exc.code and streams_missing():  # argparse's message went nowhere
            _log_to(verbose=False)
            log.warning("usage error in `jobtunnel %s` (exit status %s)", " ".join(words), exc.code)
        raise
    if args.command != "run":  # the daemon sets up its own logging
        _log_to(args.verbose)
    try:
        status: int = args.func(args)
    except Fail as exc:
        err(f"jobtunnel: {exc}")
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `jobtunnel scan ... | head`: the reader left; not an error worth a traceback.
        if sys.stderr is not None:
            sys.stderr.close()
        return 0
    return status
