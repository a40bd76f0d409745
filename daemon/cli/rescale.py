"""``jobtunnel rescale login|logout|status|jobs|refresh``: the Rescale API as a source.

The key is read without echo (or from standard input when that is not a terminal),
checked with one request, and kept in the OS keyring; it is never printed, written to
the config or the state file, or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import TYPE_CHECKING, Any

from .config import load
from .output import Fail, err, interactive, out, print_json, table

if TYPE_CHECKING:
    from ..engine.rescale_credentials import Credentials

__all__ = ["rescale"]

# Where Rescale's own tools send users for a key (rescale-htc-python's docs, for one).
KEY_PAGE = "Rescale: Settings -> API Key (https://platform.rescale.com/user/settings/api-key/)"


def rescale(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Let the daemon ask the Rescale API for your jobs: a job's tunnel then opens as "
        "soon as its cluster starts, with no log to download, and ends when the job does. "
        "Only requests to your Rescale platform leave the machine."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel rescale login                    type the API key (not shown), check it\n"
        "  jobtunnel rescale login --platform eu      a key of eu.rescale.com\n"
        "  jobtunnel rescale login --profile default  the Rescale CLI's apiconfig key\n"
        "  jobtunnel rescale jobs --json              your jobs as the API lists them\n"
        "  jobtunnel rescale refresh                  make the daemon ask now"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    login = sub.add_parser(
        "login",
        help="check an API key with one request and keep it in the OS keyring",
        description=(
            f"Make a key in {KEY_PAGE}. The key is asked without echo (or read from "
            "standard input when it is not a terminal), checked with one request to the "
            "platform, and stored in the OS keyring (needs the 'keyring' package)."
        ),
    )
    _where(login)
    login.add_argument(
        "--profile",
        metavar="NAME",
        help="take the key and address of this profile of ~/.config/rescale/apiconfig",
    )
    login.set_defaults(func=run_login)
    logout = sub.add_parser("logout", help="remove the stored key")
    logout.set_defaults(func=run_logout)
    status = sub.add_parser(
        "status", help="where the key comes from, and the API's health as the daemon sees it"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=run_status)
    jobs = sub.add_parser("jobs", help="your jobs as the API lists them (one request)")
    jobs.add_argument("--json", action="store_true", help="print a JSON list")
    jobs.add_argument("--all", action="store_true", help="ended jobs too")
    jobs.set_defaults(func=run_jobs)
    refresh = sub.add_parser("refresh", help="make the daemon ask the API now (and read a new key)")
    refresh.set_defaults(func=run_refresh)


def _where(parser: argparse.ArgumentParser) -> None:
    from ..core.rescale import PLATFORMS

    parser.add_argument(
        "--platform",
        metavar="NAME",
        help=f"one of {', '.join(PLATFORMS)} (or its host name); default: the config's",
    )
    parser.add_argument("--url", metavar="URL", help="the API's address instead (https)")


def _base(args: argparse.Namespace) -> str:
    from ..core.rescale import base_url

    config = load(args)[0].rescale
    try:
        if getattr(args, "url", None) or getattr(args, "platform", None):
            return base_url(args.platform or "", args.url or "")
        return base_url(config.platform, config.url)
    except ValueError as exc:
        raise Fail(str(exc)) from None


def _ask_key() -> str:
    if interactive(sys.stdin):
        try:
            key = getpass.getpass("Rescale API key (not shown): ")
        except EOFError:
            key = ""
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise Fail(f"no key given; make one in {KEY_PAGE}")
    return key


async def _check(creds: Credentials, page_size: int, pages: int) -> list[Any]:
    from ..engine.rescale_api import RescaleClient

    async with RescaleClient(creds, page_size=page_size, max_pages=pages) as client:
        return await client.jobs(every_page=pages > 1)


def _request(creds: Credentials, page_size: int = 1, pages: int = 1) -> list[Any]:
    from ..core.rescale import ShapeError
    from ..engine.rescale_api import RescaleError

    try:
        return asyncio.run(_check(creds, page_size, pages))
    except (RescaleError, ShapeError) as exc:
        raise Fail(f"{creds.base}: {exc}", 1) from None


def _tell_daemon(args: argparse.Namespace) -> None:
    from ..api.client import ControlError, call_sync

    try:
        call_sync("rescale_refresh", {}, transport=load(args)[0].daemon.control, timeout=5)
    except (ControlError, OSError, TimeoutError, TypeError):
        return  # not running: it reads the key when it starts
    err("the running daemon reads it now")


def run_login(args: argparse.Namespace) -> int:
    from ..engine import rescale_credentials as rc
    from ..engine.passphrase import KeyringUnavailable

    if args.profile:
        try:
            found = rc.read_apiconfig(args.profile)
        except rc.CredentialsError as exc:
            raise Fail(str(exc), 1) from None
        creds = rc.Credentials(
            found.key, _base(args) if (args.url or args.platform) else found.base, found.origin
        )
    else:
        creds = rc.Credentials(_ask_key(), _base(args), "login")
    jobs = _request(creds)
    err(f"{creds.base} accepted the key ({'jobs listed' if jobs else 'no jobs yet'})")
    try:
        backend = rc.store_login(creds.key, creds.base)
    except KeyringUnavailable as exc:
        raise Fail(str(exc), 1) from None
    out(f"stored in the OS keyring ({backend}) for {creds.base}")
    _tell_daemon(args)
    return 0


def run_logout(args: argparse.Namespace) -> int:
    from ..engine import rescale_credentials as rc

    base = rc.forget_login()
    out(f"removed the key for {base}" if base else "no key was stored")
    _tell_daemon(args)
    return 0


def _credentials(args: argparse.Namespace) -> Credentials | None:
    from ..engine import rescale_credentials as rc

    try:
        return rc.find(load(args)[0].rescale)
    except rc.CredentialsError as exc:
        raise Fail(str(exc), 1) from None


def run_status(args: argparse.Namespace) -> int:
    from ..api.client import ControlError, call_sync
    from ..api.schema import RescaleView, SchemaError, from_wire

    creds = _credentials(args)
    view: RescaleView | None = None
    try:
        raw = call_sync("status", {}, transport=load(args)[0].daemon.control, timeout=5)
        view = from_wire(raw).daemon.rescale
    except (ControlError, OSError, TimeoutError, SchemaError):
        view = None
    if args.json:
        print_json(
            {
                "base": creds.base if creds else None,
                "key_from": creds.origin if creds else None,
                "daemon": view.to_wire() if view else None,
            }
        )
        return 0
    if creds is None:
        out("no key: `jobtunnel rescale login` (or [rescale] profile, or RESCALE_API_KEY)")
    else:
        out(f"key for {creds.base} from {creds.origin}")
    out(view.line(time.time()) if view else "daemon: not running")
    return 0 if creds is not None else 1


def run_jobs(args: argparse.Namespace) -> int:
    creds = _credentials(args)
    if creds is None:
        raise Fail("no key: `jobtunnel rescale login` first", 1)
    jobs = _request(creds, page_size=50, pages=4 if args.all else 1)
    shown = [j for j in jobs if args.all or not j.ended]
    if args.json:
        print_json(
            [{"id": j.id, "name": j.name, "status": j.status, "cluster": j.cluster} for j in shown]
        )
        return 0
    if not shown:
        out("no running jobs" + ("" if args.all else " (--all shows ended ones)"))
        return 0
    out(
        table(
            [[j.id, j.name, j.status, j.cluster] for j in shown],
            ["JOB", "NAME", "STATUS", "CLUSTER"],
        )
    )
    return 0


def run_refresh(args: argparse.Namespace) -> int:
    from .control import call

    view = call(args, "rescale_refresh")
    out(
        f"asking {view.get('base') or 'the Rescale API'} now"
        if view.get("base")
        else "the daemon has no Rescale key"
    )
    return 0
