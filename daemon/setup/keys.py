"""jobtunnel's own SSH key: generate, import from PuTTY, show, check, copy to the clipboard.

The key lives in jobtunnel's data folder (``paths.key_file()``, mode 0700 folder): an
Ed25519 key is ``id_ed25519`` there; an RSA key ``id_rsa`` and an imported ECDSA key
``id_ecdsa`` beside it. ``auth.default_identity_files()`` offers all three. The public
key sits beside the private one with ``.pub``. Nothing here ever overwrites a key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .. import paths
from ..files import permission_problem, private_dir, write_new
from . import ppk

__all__ = [
    "DEFAULT_RSA_BITS",
    "KeyFileError",
    "OwnKey",
    "clipboard_tools",
    "copy_to_clipboard",
    "export_ppk",
    "generate",
    "import_ppk",
    "own_key_path",
    "own_keys",
    "public_key",
    "read_private",
    "write_key",
]

log = logging.getLogger(__name__)

DEFAULT_RSA_BITS = 4096
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
# Preference order when several own keys exist (the one `keys show` prints first).
OWN_NAMES = {"ed25519": "id_ed25519", "ecdsa": "id_ecdsa", "rsa": "id_rsa"}


class KeyFileError(Exception):
    """A key operation that cannot be done; the message is for the user."""


@dataclass(frozen=True)
class OwnKey:
    """A public key ready to paste: the OpenSSH line and its SHA256 fingerprint."""

    path: Path
    line: str
    fingerprint: str


def own_key_path(kind: str) -> Path:
    """Where jobtunnel keeps its own key of this kind ("ed25519", "ecdsa", "rsa")."""
    try:
        return paths.key_file().with_name(OWN_NAMES[kind])
    except KeyError:
        raise KeyFileError(f"no own key location for {kind} keys (use --output)") from None


def own_keys() -> list[Path]:
    """jobtunnel's own private keys that exist, in preference order."""
    return [p for p in map(own_key_path, OWN_NAMES) if p.exists()]


def write_key(key: asyncssh.SSHKey, path: Path, passphrase: str | None = None) -> Path:
    """Write ``key`` in OpenSSH format (0600, never replacing a file) and its ``.pub``."""
    if path.exists():
        raise KeyFileError(f"{path} exists; it was left unchanged (nothing overwrites a key)")
    private_dir(path.parent)
    data = (
        key.export_private_key("openssh", passphrase)
        if passphrase
        else key.export_private_key("openssh")
    )
    try:
        write_new(path, data, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; it was left unchanged") from None
    pub = Path(f"{path}.pub")
    tmp = pub.with_name(f".{pub.name}.tmp")
    tmp.unlink(missing_ok=True)
    write_new(tmp, key.export_public_key("openssh"), 0o644)
    # A stale .pub without its private key is replaced: it belongs to no key any more.
    tmp.replace(pub)
    log.info("wrote key %s (%s)", path, key.get_fingerprint("sha256"))
    return path


def generate(
    kind: str = "ed25519",
    bits: int | None = None,
    passphrase: str | None = None,
    path: Path | None = None,
    comment: str | None = None,
) -> Path:
    """Make a new key at ``path`` (default: jobtunnel's own location for ``kind``)."""
    if kind == "ed25519":
        if bits is not None:
            raise KeyFileError("--bits applies to rsa keys only (ed25519 keys have one size)")
        algorithm, options = "ssh-ed25519", {}
    elif kind == "rsa":
        size = bits or DEFAULT_RSA_BITS
        if not MIN_RSA_BITS <= size <= MAX_RSA_BITS:
            raise KeyFileError(f"rsa keys need {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
        algorithm, options = "ssh-rsa", {"key_size": size}
    else:
        raise KeyFileError(f"unknown key type {kind!r} (ed25519 or rsa)")
    target = path or own_key_path(kind)
    if target.exists():
        raise KeyFileError(f"{target} exists; it was left unchanged (nothing overwrites a key)")
    key = asyncssh.generate_private_key(algorithm, comment=comment or _default_comment(), **options)
    return write_key(key, target, passphrase)


def _default_comment() -> str:
    user = os.environ.get("USER") or os.environ.get("USERNAME") or "user"
    host = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")
    return f"jobtunnel {user}@{host}".strip("@")


def read_private(path: Path, passphrase: str | None = None) -> asyncssh.SSHKey:
    """Load a private key for use: refuses loose permissions, names the file on errors."""
    problem = permission_problem(path)
    if problem:
        raise KeyFileError(problem)
    try:
        return asyncssh.read_private_key(path, passphrase)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def public_key(path: Path, passphrase: str | None = None) -> OwnKey:
    """The one-line public key of the private key at ``path``, from its ``.pub`` file or,
    when that is missing, from the key itself (which may need ``passphrase``)."""
    pub = Path(f"{path}.pub")
    try:
        key = asyncssh.import_public_key(pub.read_bytes())
    except FileNotFoundError:
        key = read_private(path, passphrase).convert_to_public()
    except (OSError, asyncssh.KeyImportError) as exc:
        raise KeyFileError(f"{pub}: not a readable public key: {exc}") from None
    line = key.export_public_key("openssh").decode("ascii").strip()
    return OwnKey(path, line, key.get_fingerprint("sha256"))


def import_ppk(
    source: Path,
    passphrase: str | None = None,
    output: Path | None = None,
) -> Path:
    """Convert a PuTTYgen ``.ppk`` to an OpenSSH key at ``output`` (default: jobtunnel's own
    location for its type), keeping its passphrase. Errors name ``source``."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        key = ppk.convert(data, passphrase)
    except ppk.PpkError as exc:
        raise KeyFileError(f"{source}: {exc}") from None
    algorithm = key.get_algorithm()
    kind = (
        "ecdsa"
        if algorithm.startswith("ecdsa-")
        else {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(algorithm, algorithm)
    )
    return write_key(key, output or own_key_path(kind), passphrase)


def export_ppk(
    source: Path, output: Path, passphrase: str | None = None, new_passphrase: str | None = None
) -> Path:
    """Write the key at ``source`` as a PuTTY v3 ``.ppk`` at ``output`` (0600, never over
    an existing file), encrypted with ``new_passphrase``, else with the key's own."""
    key = read_private(source, passphrase)
    if output.exists():
        raise KeyFileError(f"{output} exists; it was left unchanged (nothing overwrites a key)")
    data = ppk.to_ppk(key, new_passphrase or passphrase)
    try:
        write_new(output, data, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{output} exists; it was left unchanged") from None
    log.info("wrote PuTTY key %s (%s)", output, key.get_fingerprint("sha256"))
    return output


def clipboard_tools(
    platform: str = sys.platform, environ: Mapping[str, str] = os.environ
) -> list[list[str]]:
    """Clipboard commands worth trying here, best first (each reads the text on stdin)."""
    if platform == "darwin":
        return [["pbcopy"]]
    if platform == "win32":
        return [["clip"]]
    tools: list[list[str]] = []
    if environ.get("WAYLAND_DISPLAY"):
        tools.append(["wl-copy"])
    if environ.get("DISPLAY"):
        tools += [["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"]]
    return tools


def copy_to_clipboard(text: str) -> str | None:
    """Put ``text`` on the clipboard; the tool used, or None where no clipboard works."""
    for command in clipboard_tools():
        exe = shutil.which(command[0])
        if exe is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            # xclip/xsel stay behind to serve the selection: never wait on their output.
            done = subprocess.run(
                [exe, *command[1:]],
                input=text.encode("utf-8"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )
            if done.returncode == 0:
                return command[0]
    return None
