"""``jobtunnel keys generate|show|import|remember``: jobtunnel's own SSH key."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import paths
from ..engine import passphrase
from ..setup import doctor, keys, ppk
from .config import load
from .output import Fail, err, out

__all__ = ["keys_command", "show_public"]


def keys_command(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"jobtunnel's own key lives in {paths.key_file().parent} (id_ed25519; id_rsa or "
        "id_ecdsa beside it). Its public key goes into Rescale: Account -> Job Settings -> "
        "SSH Public Key."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel keys generate               a new Ed25519 key (never overwrites one)\n"
        "  jobtunnel keys show --copy            the public key, on the clipboard too\n"
        "  jobtunnel keys import ~/work.ppk      a PuTTYgen key, converted\n"
        "  jobtunnel keys export --ppk key.ppk   the key for PuTTY and Pageant (PPK v3)\n"
        "  jobtunnel keys remember               its passphrase, in the OS keyring"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = sub.add_parser(
        "generate",
        help="make a new key (never overwrites one)",
        description=(
            "Make jobtunnel's own key in OpenSSH format: private key mode 0600 in a 0700 "
            "folder, public key beside it. An existing key is never overwritten."
        ),
    )
    gen.add_argument(
        "--type", choices=("ed25519", "rsa"), default="ed25519", help="key type (ed25519)"
    )
    gen.add_argument("--bits", type=int, help=f"rsa key size ({keys.DEFAULT_RSA_BITS})")
    gen.add_argument(
        "--passphrase",
        action="store_true",
        help="ask for a passphrase (then use ssh-agent or `keys remember` for the daemon)",
    )
    gen.set_defaults(func=run_generate)
    show = sub.add_parser(
        "show",
        help="print the public key to paste into Rescale, with its fingerprint",
        description=(
            "Print the one-line public key on stdout (its SHA256 fingerprint on stderr). "
            "Paste it into Rescale: Account -> Job Settings -> SSH Public Key."
        ),
    )
    show.add_argument("--copy", action="store_true", help="also put it on the clipboard")
    show.add_argument("--file", metavar="KEY", help="another private key than jobtunnel's own")
    show.set_defaults(func=run_show)
    imp = sub.add_parser(
        "import",
        help="convert a PuTTYgen .ppk key to jobtunnel's own OpenSSH key",
        description=(
            "Read a PuTTY key (PPK version 2 or 3, RSA, ECDSA or Ed25519, encrypted or "
            "not; the MAC is verified) and write it in OpenSSH format as jobtunnel's own "
            "key, keeping its passphrase. An existing key is never overwritten."
        ),
    )
    imp.add_argument("file", metavar="FILE.ppk", help="the PuTTY private key file")
    imp.add_argument("--output", metavar="PATH", help="write here instead of the own key path")
    imp.set_defaults(func=run_import)
    exp = sub.add_parser(
        "export",
        help="write jobtunnel's key as a PuTTY .ppk (for PuTTY, Pageant, WinSCP)",
        description=(
            "Write jobtunnel's key (or --file KEY) as a PuTTY version 3 key file, mode "
            "0600, with the key's comment. An encrypted key keeps its passphrase; "
            "--passphrase asks for a new one. An existing file is never overwritten."
        ),
    )
    exp.add_argument("--ppk", metavar="FILE", required=True, help="the .ppk file to write")
    exp.add_argument("--file", metavar="KEY", help="another private key than jobtunnel's own")
    exp.add_argument("--passphrase", action="store_true", help="encrypt with a new passphrase")
    exp.set_defaults(func=run_export)
    rem = sub.add_parser(
        "remember",
        help="keep the key's passphrase in the OS keyring for the daemon",
        description=(
            "Ask the passphrase of an encrypted key once, check it, and store it in the OS "
            "keyring (needs the optional 'keyring' package), so that the daemon can unlock "
            "the key at login. Never written to the config, the state file or a log."
        ),
    )
    rem.add_argument("--file", metavar="KEY", help="another private key than jobtunnel's own")
    rem.add_argument("--forget", action="store_true", help="remove the remembered passphrase")
    rem.set_defaults(func=run_remember)


def _key_fail(exc: Exception) -> Fail:
    return Fail(str(exc), 1)


def show_public(path: Path) -> keys.OwnKey:
    """Print the public key line (alone on stdout, for pasting or piping), fingerprint aside."""
    try:
        own = keys.public_key(path)
    except keys.KeyFileError as exc:
        if "assphrase" not in str(exc):
            raise _key_fail(exc) from None
        # No .pub beside an encrypted key: the public half needs the passphrase.
        phrase = passphrase.ask(f"Passphrase for {path}: ")
        try:
            own = keys.public_key(path, phrase)
        except keys.KeyFileError as again:
            raise _key_fail(again) from None
    out(own.line)
    err(f"{own.fingerprint}  ({path})")
    return own


def _own_key(args: argparse.Namespace) -> Path:
    """--file, else jobtunnel's own key, else the first key the engine would offer."""
    if getattr(args, "file", None):
        return Path(args.file).expanduser()
    found = keys.own_keys() or doctor.usable_keys(load(args)[0])
    if not found:
        raise Fail("no key yet: `jobtunnel keys generate` (or `jobtunnel init`) makes one", 1)
    return found[0]


def new_passphrase(wanted: bool) -> str | None:
    """A new passphrase typed twice on the terminal, when ``wanted``."""
    if not wanted:
        return None
    try:
        return passphrase.ask_new()
    except ValueError as exc:
        raise Fail(str(exc)) from None


def run_generate(args: argparse.Namespace) -> int:
    phrase = new_passphrase(args.passphrase)
    try:
        path = keys.generate(args.type, args.bits, phrase)
    except keys.KeyFileError as exc:
        raise _key_fail(exc) from None
    err(f"wrote {path} (private, mode 0600) and {path}.pub")
    show_public(path)
    if phrase:
        err(
            f"the daemon cannot type the passphrase: `ssh-add {path}` (ssh-agent) or "
            "`jobtunnel keys remember` (OS keyring)"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    own = show_public(_own_key(args))
    if args.copy:
        tool = keys.copy_to_clipboard(own.line)
        if tool:
            err(f"copied to the clipboard ({tool})")
        else:
            err(
                "no clipboard here (xclip, xsel or wl-copy with a display; pbcopy; clip): "
                "select the line above and copy it"
            )
    return 0


def run_import(args: argparse.Namespace) -> int:
    source = Path(args.file).expanduser()
    phrase = None
    try:
        encrypted = ppk.needs_passphrase(source.read_bytes())
    except OSError as exc:
        raise Fail(f"{source}: cannot read: {exc.strerror or exc}") from None
    except ppk.PpkError as exc:
        raise Fail(f"{source}: {exc}") from None
    if encrypted:
        phrase = passphrase.ask(f"Passphrase for {source}: ")
        if not phrase:
            raise Fail(f"{source} is encrypted: run this on a terminal to type its passphrase")
    output = Path(args.output).expanduser() if args.output else None
    try:
        path = keys.import_ppk(source, phrase, output)
    except keys.KeyFileError as exc:
        raise _key_fail(exc) from None
    kept = ", same passphrase" if phrase else ""
    err(f"imported {source} -> {path} (OpenSSH format, mode 0600{kept})")
    show_public(path)
    return 0


def run_export(args: argparse.Namespace) -> int:
    source = _own_key(args)
    output = Path(args.ppk).expanduser()
    phrase = None
    try:
        keys.read_private(source)
    except keys.KeyFileError as exc:
        if "assphrase" not in str(exc):
            raise _key_fail(exc) from None
        phrase = passphrase.ask(f"Passphrase for {source}: ")
        if not phrase:
            raise Fail(
                f"{source} is encrypted: run this on a terminal to type its passphrase"
            ) from None
    new = new_passphrase(args.passphrase)
    try:
        keys.export_ppk(source, output, phrase, new)
    except keys.KeyFileError as exc:
        raise _key_fail(exc) from None
    kept = ", encrypted" if new or phrase else ""
    err(f"wrote {output} (PuTTY v3 key, mode 0600{kept}) from {source}")
    return 0


def run_remember(args: argparse.Namespace) -> int:
    path = _own_key(args)
    try:
        if args.forget:
            gone = passphrase.forget(path)
            out(f"{'forgot' if gone else 'nothing remembered for'} {path}")
            return 0
        try:
            keys.read_private(path)
        except keys.KeyFileError as exc:
            if "assphrase" not in str(exc):
                raise _key_fail(exc) from None
        else:
            out(f"{path} is not encrypted: there is no passphrase to remember")
            return 0
        phrase = passphrase.ask(f"Passphrase for {path}: ")
        if not phrase:
            raise Fail("a passphrase can only be typed on a terminal")
        try:
            keys.read_private(path, phrase)
        except keys.KeyFileError:
            raise Fail(f"wrong passphrase for {path}; nothing was stored", 1) from None
        backend = passphrase.remember(path, phrase)
    except passphrase.KeyringUnavailable as exc:
        raise Fail(str(exc), 1) from None
    out(f"remembered in the OS keyring ({backend}); the daemon now unlocks {path}")
    return 0
