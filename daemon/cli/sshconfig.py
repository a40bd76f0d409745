"""OpenSSH's own tools on jobtunnel's clusters: ``ssh-config``, ``ssh``, ``scp``, ``sftp``.

The daemon keeps an ssh_config with a ``Host rescale-<jobid>`` block per live cluster
(:mod:`jobtunnel.daemon.process.sshexport`). ``ssh``/``scp``/``sftp`` run the system's
program with ``-F`` that file, so the settings are exactly the daemon's: its key, its
pinned host key with strict checking, and nothing from ``~/.ssh/config``.
"""

from __future__ import annotations

import argparse
import shutil

from .. import paths
from . import control
from .endpoints import NAME_HELP, endpoint_named
from .launch import hand_over
from .output import Fail, confirm, err, out

__all__ = ["scp", "sftp", "ssh", "ssh_config"]

MISSING = (
    "OpenSSH's {0} is not installed (Debian/Ubuntu: sudo apt-get install openssh-client; "
    "Windows: Settings > Apps > Optional features > OpenSSH Client)"
)


def ssh_config(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The daemon keeps an OpenSSH client config with one Host block per live cluster: "
        "rescale-<jobid> (rescale-<user>-<host>-<port> without a job id), its address, "
        "port and user, jobtunnel's key, and host-key checking against jobtunnel's own "
        "pins (StrictHostKeyChecking yes). An ended or forgotten job's block goes. "
        "Without options this prints the file. --install adds one Include line at the "
        "top of ~/.ssh/config (after asking, with a backup beside it), so that ssh, scp, "
        "rsync and VS Code Remote-SSH know the clusters; --uninstall removes exactly it."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel ssh-config                 the file, as the daemon wrote it\n"
        "  jobtunnel ssh-config --install       Include it from ~/.ssh/config (asks)\n"
        "  ssh rescale-qpWia                    then: a terminal on job qpWia's cluster\n"
        "  scp results.csv rescale-qpWia:       and file copies"
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--path", action="store_true", help="print only the file's path")
    what.add_argument(
        "--install", action="store_true", help="add the Include line to ~/.ssh/config"
    )
    what.add_argument(
        "--uninstall", action="store_true", help="remove that line from ~/.ssh/config"
    )
    parser.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    parser.set_defaults(func=run_ssh_config)


def run_ssh_config(args: argparse.Namespace) -> int:
    target = paths.ssh_config_file()
    if args.path:
        out(str(target))
        return 0
    if args.install or args.uninstall:
        from ..setup import sshinclude

        def ask(question: str) -> bool | None:
            if args.yes:
                return True
            err(question, end="")
            return confirm("Go ahead?")

        change = sshinclude.install if args.install else sshinclude.uninstall
        try:
            outcome = change(ask)
        except sshinclude.SshIncludeError as exc:
            raise Fail(str(exc), 1) from None
        out(outcome.message)
        return 0
    try:
        out(target.read_text(encoding="utf-8"), end="")
    except FileNotFoundError:
        raise Fail(
            f"{target} does not exist yet: the daemon writes it (`jobtunnel run`)", 1
        ) from None
    return 0


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Fail(MISSING.format(name), 1)
    return found


def _written(alias: str) -> bool:
    try:
        text = paths.ssh_config_file().read_text(encoding="utf-8")
    except OSError:
        return False
    return f"\nHost {alias}\n" in text


def _pinned(alias: str) -> bool:
    try:
        lines = paths.ssh_known_hosts_file().read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return any(line.split(" ", 1)[0] == alias for line in lines)


def alias_of(args: argparse.Namespace, name: str) -> str:
    """The ssh_config alias ``name`` means: an alias of the file as it is, else a job id
    or user@host:port resolved by the daemon's status (as other endpoint commands do)."""
    if _written(name):
        return name
    snapshot, _ = control.status(args)
    endpoint = endpoint_named(snapshot.endpoints, name)
    alias = endpoint.ssh_alias
    if not alias or not _written(alias):
        raise Fail(
            f"{endpoint.name} is not in {paths.ssh_config_file()} "
            f"(state {endpoint.state}; `jobtunnel logs` says why)",
            1,
        )
    return alias


def _check_pinned(alias: str, name: str) -> None:
    if not _pinned(alias):
        raise Fail(
            f"jobtunnel has not connected to {name} yet, so it has no host key to check "
            f"against: `jobtunnel connect {name}` first",
            1,
        )


def ssh(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the system's ssh on an endpoint with jobtunnel's settings (its key, its pinned "
        "host key, strict checking): a terminal as the job user, or COMMAND on the cluster. "
        "The same as `ssh -F $(jobtunnel ssh-config --path) rescale-<jobid>`; your "
        "~/.ssh/config is not read."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel ssh qpWia                  a terminal on job qpWia's cluster\n"
        "  jobtunnel ssh qpWia nvidia-smi       one command there"
    )
    parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run_ssh)


def run_ssh(args: argparse.Namespace) -> int:
    program = _program("ssh")
    alias = alias_of(args, args.name)
    _check_pinned(alias, args.name)
    return hand_over([program, "-F", str(paths.ssh_config_file()), alias, *args.command])


# Options of scp and sftp that take a value (the next word, when not glued to them).
VALUE_OPTIONS = {"scp": "cDFiJlOoPSX", "sftp": "BbcDFiJloPRSs"}


def _positionals(program_name: str, words: list[str]) -> list[int]:
    """Indexes of the words that are not options nor option values."""
    takes = VALUE_OPTIONS[program_name]
    found: list[int] = []
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
        elif word.startswith("-") and len(word) > 1:
            skip = word[-1] in takes and len(word) == 2
        else:
            found.append(i)
    return found


def _remote(word: str) -> tuple[str, str, str] | None:
    """(host, ":", path) of ``HOST:PATH``; None for a local path (``/`` before the first
    ``:``, or a Windows drive)."""
    host, colon, rest = word.partition(":")
    if not colon or not host or "/" in host or "\\" in host or len(host) == 1:
        return None
    return host, colon, rest


def _copy_tool(program_name: str, words: list[str], args: argparse.Namespace) -> int:
    program = _program(program_name)
    words = list(words)
    positionals = _positionals(program_name, words)
    if program_name == "sftp":
        positionals = positionals[:1]  # the destination; the rest is sftp's business
    for i in positionals:
        parts = _remote(words[i])
        if parts is None and program_name == "sftp":
            parts = (words[i], "", "")
        if parts is None:
            continue
        alias = alias_of(args, parts[0])
        _check_pinned(alias, parts[0])
        words[i] = alias + parts[1] + parts[2]
    return hand_over([program, "-F", str(paths.ssh_config_file()), *words])


def _pass_through(parser: argparse.ArgumentParser, program_name: str, metavar: str) -> None:
    """Every word after the command goes to the program, options included (``-r``)."""
    # argparse's REMAINDER refuses a leading option; with no prefix characters every word
    # is positional. Only a lone -h/--help is ours.
    parser.prefix_chars = "\0"
    parser.add_argument("words", metavar=metavar, nargs="*")

    def run(args: argparse.Namespace) -> int:
        if args.words in (["-h"], ["--help"]) or not args.words:
            parser.print_help()
            parser.exit(0 if args.words else 2)
        return _copy_tool(program_name, args.words, args)

    parser.set_defaults(func=run)


def scp(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the system's scp with jobtunnel's settings. Name a cluster as NAME:PATH, "
        "NAME being a job id or its rescale-<jobid> alias; other arguments go to scp as "
        "they are."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel scp results.csv qpWia:              into the job user's home\n"
        "  jobtunnel scp -r qpWia:run/output ./output    a folder back"
    )
    _pass_through(parser, "scp", "ARG")


def sftp(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the system's sftp with jobtunnel's settings on NAME (a job id or its "
        "rescale-<jobid> alias; NAME:PATH starts in PATH)."
    )
    parser.epilog = "example:\n  jobtunnel sftp qpWia"
    _pass_through(parser, "sftp", "[OPTION...] NAME[:PATH]")
