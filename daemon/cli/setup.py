"""``jobtunnel init`` (the first run) and ``jobtunnel doctor`` (what is missing)."""

from __future__ import annotations

import argparse
import sys

from ..setup import doctor, firstrun, keys
from . import service
from .keys import new_passphrase
from .output import Fail, interactive, out

__all__ = ["doctor_command", "init"]


def init(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Make what is missing: jobtunnel's own key, the commented default config, the "
        "watched folders. Then print the public key and what to set in Rescale, and "
        "offer to install the login service. Running it again changes nothing that "
        "exists. No network call is made. Exit status 1 when the config has errors."
    )
    parser.add_argument("--passphrase", action="store_true", help="protect a new key with one")
    parser.add_argument(
        "--no-service", action="store_true", help="do not offer to install the login service"
    )
    parser.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    phrase = new_passphrase(args.passphrase)
    try:
        result = firstrun.init(args.config, phrase)
    except (keys.KeyFileError, OSError) as exc:
        raise Fail(f"init stopped: {exc}", 1) from None
    for line in result.done:
        out(f"made: {line}")
    for line in result.kept:
        out(f"kept: {line}")
    if result.config_error:
        out(f"the config file has errors; fix them, then run init again:\n{result.config_error}")
    out()
    out(firstrun.rescale_steps(result.public, result.folders))
    status = 1 if result.config_error else 0
    if result.service_installed:
        out(f"login service: installed ({result.service_file})")
    elif not args.no_service and interactive(sys.stdin) and sys.stdout is not None:
        answer = input("Start jobtunnel at every login (jobtunnel service install)? [Y/n] ")
        if answer.strip().lower() in ("", "y", "yes"):
            return service.install() or status
    else:
        out("login service: to start jobtunnel at every login, run: jobtunnel service install")
    out("then `jobtunnel doctor` checks everything")
    return status


def doctor_command(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "One line per check: key present and private, public key, config valid, "
        "watched folders, daemon running, login service installed, tray backend, "
        "local ports free; each failing one says how to fix it. Exit status 1 when "
        "something needs you."
    )
    parser.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    results = doctor.run_checks(args.config)
    for check in results:
        out(str(check))
    failing = sum(c.status == "fail" for c in results)
    out(f"{failing} to fix" if failing else "all good")
    return 1 if failing else 0
