"""``jobtunnel tray``: the system-tray icon and menu."""

from __future__ import annotations

import argparse

__all__ = ["tray"]


def tray(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The system-tray icon and menu: a client of the running daemon (its menu has "
        "Start daemon when none runs). Needs a desktop session; PYSTRAY_BACKEND forces a "
        "pystray backend. `jobtunnel doctor` says which backend would be used."
    )
    parser.set_defaults(func=run_tray)


def run_tray(args: argparse.Namespace) -> int:
    from jobtunnel.tray.app import run_tray as run  # pystray wants a display: only here

    return run(args.config, verbose=args.verbose)
