"""``jobtunnel service install|uninstall|status``: start jobtunnel at every login."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["install", "service"]


def service(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "install: write the login-service files for this installation (its Python, its "
        "paths), then enable and start them; running it again updates them. uninstall: "
        "stop them and remove exactly the files install wrote. status: what is installed "
        "and running. Exit status 1 when the service manager could not do it (the files "
        "are then still written, and it says how to start jobtunnel instead). Linux: "
        "systemd user units (XDG autostart without systemd); macOS: LaunchAgents; "
        "Windows: logon tasks."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel service install\n"
        "  jobtunnel service install --dry-run --platform windows   show the logon tasks"
    )
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument(
        "--dry-run", action="store_true", help="print the files and commands; change nothing"
    )
    parser.add_argument(
        "--platform",
        choices=["linux", "macos", "windows"],
        help="render another platform's files (with --dry-run or --root)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="write the files under DIR as if it were / and run no command (for packaging "
        "and tests)",
    )
    parser.set_defaults(func=run_service)


def run_service(args: argparse.Namespace) -> int:
    return _login_service(args.action, args.platform, dry_run=args.dry_run, root=args.root)


def install() -> int:
    """``jobtunnel service install`` for this machine (what ``init`` offers)."""
    return _login_service("install", None, dry_run=False, root=None)


def _login_service(action: str, platform: str | None, *, dry_run: bool, root: Path | None) -> int:
    from ..setup import loginservice  # only this command needs it
    from .output import out

    return loginservice.main(action, platform, dry_run=dry_run, root=root, out=out)
