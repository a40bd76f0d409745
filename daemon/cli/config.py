"""``jobtunnel config path|show|check|init``, and loading the config for other commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import paths
from ..config import Config, ConfigError, default_config_text, load_config, render_toml
from ..files import write_new
from .output import Fail, err, out, print_json

__all__ = ["config", "load"]


def load(args: argparse.Namespace) -> tuple[Config, Path]:
    """The config of ``--config`` (or the default file); a broken one ends the command."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise Fail(f"the config file has errors (nothing was done):\n{exc}", 1) from None


def config(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The config file: one TOML file, every key optional. It is "
        f"{paths.config_file()} unless --config or JOBTUNNEL_CONFIG names another."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel config init     write the commented default config\n"
        "  jobtunnel config check    validate it (file, line and key of every error)\n"
        "  jobtunnel config show     the effective settings, defaults included\n"
        "  jobtunnel config reload   make the running daemon re-read it (SIGHUP does too)"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("path", help="print where the config file is").set_defaults(func=run_path)
    show = sub.add_parser("show", help="print the effective config (file plus defaults)")
    show.add_argument("--json", action="store_true", help="as JSON")
    show.set_defaults(func=run_show)
    sub.add_parser(
        "check", help="validate the config; errors name the file, line and key"
    ).set_defaults(func=run_check)
    sub.add_parser(
        "init", help="write the commented default config (never overwrites)"
    ).set_defaults(func=run_init)
    sub.add_parser(
        "reload",
        help="make the running daemon re-read the config (every platform; SIGHUP on POSIX)",
    ).set_defaults(func=run_reload)


def run_path(args: argparse.Namespace) -> int:
    path = args.config or paths.config_file()
    out(str(path))
    if not path.exists():
        err("(not created yet: every default applies; `jobtunnel config init` writes it)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    loaded, path = load(args)
    if args.json:
        print_json(loaded.to_dict())
    else:
        out(f"# effective configuration, from {path}" + ("" if path.exists() else " (defaults)"))
        out(render_toml(loaded), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    _, path = load(args)
    out(f"{path}: OK" if path.exists() else f"{path}: not present; every default applies")
    return 0


def run_reload(args: argparse.Namespace) -> int:
    from .control import call

    load(args)  # a broken file is named here, before the daemon refuses it
    call(args, "reload")
    out("the daemon re-read its config; only tunnels whose settings changed were reopened")
    return 0


def run_init(args: argparse.Namespace) -> int:
    path = args.config or paths.config_file()
    if path.exists():
        out(f"{path} exists; left unchanged (`jobtunnel config check` validates it)")
        return 0
    try:
        write_new(path, default_config_text())
    except FileExistsError:
        out(f"{path} exists; left unchanged")
        return 0
    except OSError as exc:
        raise Fail(f"cannot write {path}: {exc.strerror or exc}") from None
    out(f"wrote {path}: every key is commented out at its default; edit what you need")
    return 0
