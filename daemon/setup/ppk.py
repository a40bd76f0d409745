"""PuTTY private key files (``.ppk``): versions 2 and 3 read into keys OpenSSH can use,
and keys written as version 3 (:func:`to_ppk`) for PuTTY users.

asyncssh does not read PuTTY's format, so it is parsed here, following PuTTY's own
documentation (appendix C of the PuTTY manual, "PPK file format"):

- a header block of ``Name: value`` lines; the public and private blobs are base64 over
  ``Public-Lines``/``Private-Lines`` lines;
- v2: AES-256-CBC with a zero IV, key ``SHA-1(0,pass) || SHA-1(1,pass)`` cut to 32 bytes;
  MAC is HMAC-SHA-1 keyed by ``SHA-1("putty-private-key-file-mac-key" || pass)``;
- v3: Argon2 (``Key-Derivation`` Argon2id/Argon2i/Argon2d with the ``Argon2-*`` headers)
  gives 80 bytes: cipher key, IV, MAC key; MAC is HMAC-SHA-256 (empty key when the file
  is not encrypted);
- the MAC covers the algorithm name, encryption name, comment, public blob and the
  decrypted private blob (padding included), each as an SSH string.

asyncssh neither reads nor writes it (its export formats are OpenSSH, PKCS#1/#8 and
RFC 4716). Pure: bytes and a passphrase in, a key out. No file system, no prompting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncssh
from cryptography.exceptions import InvalidKey, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "PpkError",
    "PpkFile",
    "PpkPassphraseError",
    "convert",
    "needs_passphrase",
    "parse",
    "to_openssh",
    "to_ppk",
]

# A key file is a few kilobytes; refuse anything far larger before parsing it.
MAX_FILE_BYTES = 1 << 20
# Argon2 cost ceilings: a hostile file must not make us allocate gigabytes or spin for
# minutes. puttygen's defaults are 8 MiB and about 100 ms of passes.
MAX_ARGON2_MEMORY_KIB = 1 << 20
MAX_ARGON2_PASSES = 10_000
MAX_ARGON2_PARALLELISM = 64

_CURVES: dict[str, ec.EllipticCurve] = {
    "nistp256": ec.SECP256R1(),
    "nistp384": ec.SECP384R1(),
    "nistp521": ec.SECP521R1(),
}


class PpkError(ValueError):
    """The file is not a PuTTY key this code can read, or it is damaged."""


class PpkPassphraseError(PpkError):
    """The passphrase is missing or wrong (the MAC does not match after decryption)."""


@dataclass(frozen=True)
class PpkFile:
    """The parsed but still encrypted contents of a ``.ppk`` file."""

    version: int
    algorithm: str
    encryption: str
    comment: str
    public_blob: bytes
    private_blob: bytes
    mac: bytes
    headers: dict[str, str]

    @property
    def encrypted(self) -> bool:
        return self.encryption != "none"


class _Reader:
    """SSH wire-format fields (RFC 4251 strings and mpints) from a blob."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def string(self) -> bytes:
        if self._pos + 4 > len(self._data):
            raise PpkError(f"the {self._what} is truncated")
        size = int.from_bytes(self._data[self._pos : self._pos + 4], "big")
        start = self._pos + 4
        if start + size > len(self._data):
            raise PpkError(f"the {self._what} is truncated")
        self._pos = start + size
        return self._data[start : self._pos]

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def parse(data: bytes) -> PpkFile:
    """Split a ``.ppk`` file into its fields; nothing is decrypted or verified yet."""
    if len(data) > MAX_FILE_BYTES:
        raise PpkError("too large for a PuTTY key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PpkError("not a PuTTY key file (not text)") from None
    lines = [line.rstrip() for line in text.lstrip("\ufeff").splitlines()]
    headers: dict[str, str] = {}
    blobs: dict[str, bytes] = {}
    first = lines[0] if lines else ""
    if first.startswith("PuTTY-User-Key-File-1") or first.startswith("SSH PRIVATE KEY FILE"):
        raise PpkError(
            "a PuTTY key in the old version 1 format: re-save it with a current puttygen"
        )
    if not first.startswith("PuTTY-User-Key-File-"):
        raise PpkError("not a PuTTY key file (no PuTTY-User-Key-File header)")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        # "Comment: " with an empty comment loses its space to the rstrip above.
        name, sep, value = line.partition(":")
        value = value.removeprefix(" ")
        if not sep:
            raise PpkError(f"line {i}: expected 'Name: value'")
        if name in ("Public-Lines", "Private-Lines"):
            try:
                count = int(value)
            except ValueError:
                raise PpkError(f"line {i}: {name} is not a number") from None
            if count < 0 or i + count > len(lines):
                raise PpkError(f"line {i}: {name} runs past the end of the file")
            try:
                blobs[name] = base64.b64decode("".join(lines[i : i + count]), validate=True)
            except binascii.Error:
                raise PpkError(
                    f"line {i + 1}: damaged base64 in the {name[:-6].lower()} key"
                ) from None
            i += count
        else:
            headers[name] = value
    version_word = first.partition(":")[0].removeprefix("PuTTY-User-Key-File-")
    if version_word not in ("2", "3"):
        raise PpkError(f"PuTTY key file version {version_word} is not supported (2 and 3 are)")
    for needed in ("Encryption", "Comment", "Private-MAC"):
        if needed not in headers:
            raise PpkError(f"the {needed} line is missing")
    for needed in ("Public-Lines", "Private-Lines"):
        if needed not in blobs:
            raise PpkError(f"the {needed} block is missing")
    try:
        mac = bytes.fromhex(headers["Private-MAC"])
    except ValueError:
        raise PpkError("the Private-MAC line is not hexadecimal") from None
    return PpkFile(
        version=int(version_word),
        algorithm=headers[f"PuTTY-User-Key-File-{version_word}"],
        encryption=headers["Encryption"],
        comment=headers["Comment"],
        public_blob=blobs["Public-Lines"],
        private_blob=blobs["Private-Lines"],
        mac=mac,
        headers=headers,
    )


def needs_passphrase(data: bytes) -> bool:
    """Whether the file is encrypted (so a passphrase must be asked for)."""
    return parse(data).encrypted


def _argon2(headers: Mapping[str, str], passphrase: bytes) -> bytes:
    try:
        from cryptography.hazmat.primitives.kdf import argon2
    except ImportError:  # cryptography < 44
        argon2 = None  # type: ignore[assignment]

    kdf_name = headers.get("Key-Derivation", "")
    kdfs: dict[str, Callable[..., Any] | None] = {
        "Argon2id": getattr(argon2, "Argon2id", None),
        "Argon2i": getattr(argon2, "Argon2i", None),
        "Argon2d": getattr(argon2, "Argon2d", None),
    }
    if kdf_name not in kdfs:
        raise PpkError(f"unknown Key-Derivation {kdf_name!r} (Argon2id, Argon2i or Argon2d)")
    kdf_class = kdfs[kdf_name]
    if kdf_class is None:
        raise PpkError(
            f"{kdf_name} needs a newer 'cryptography' package (installed one lacks it); "
            "or re-save the key in puttygen with the default Argon2id"
        )
    try:
        memory = int(headers["Argon2-Memory"])
        passes = int(headers["Argon2-Passes"])
        lanes = int(headers["Argon2-Parallelism"])
        salt = bytes.fromhex(headers["Argon2-Salt"])
    except KeyError as exc:
        raise PpkError(f"the {exc.args[0]} line is missing") from None
    except ValueError:
        raise PpkError("an Argon2 parameter line is not a number or hex") from None
    if not (0 < memory <= MAX_ARGON2_MEMORY_KIB and 0 < passes <= MAX_ARGON2_PASSES):
        raise PpkError(f"Argon2 cost out of range (memory {memory} KiB, {passes} passes)")
    if not 0 < lanes <= MAX_ARGON2_PARALLELISM:
        raise PpkError(f"Argon2 parallelism {lanes} out of range")
    try:
        kdf = kdf_class(salt=salt, length=80, iterations=passes, lanes=lanes, memory_cost=memory)
        out: bytes = kdf.derive(passphrase)
    except (ValueError, InvalidKey, UnsupportedAlgorithm) as exc:
        raise PpkError(f"Argon2 parameters rejected: {exc}") from None
    return out


def _decrypt(ppk: PpkFile, passphrase: str | None) -> tuple[bytes, bytes, str]:
    """The private blob in clear, the MAC key, and the HMAC hash name."""
    if ppk.encryption not in ("none", "aes256-cbc"):
        raise PpkError(f"unknown Encryption {ppk.encryption!r}")
    if ppk.encrypted and not passphrase:
        raise PpkPassphraseError("the key is encrypted: a passphrase is needed")
    secret = (passphrase or "").encode("utf-8") if ppk.encrypted else b""
    if ppk.version == 2:
        mac_key = hashlib.sha1(b"putty-private-key-file-mac-key" + secret).digest()
        hash_name = "sha1"
        cipher_key = (
            hashlib.sha1(b"\0\0\0\0" + secret).digest()
            + hashlib.sha1(b"\0\0\0\1" + secret).digest()
        )[:32]
        iv = bytes(16)
    else:
        hash_name = "sha256"
        if ppk.encrypted:
            derived = _argon2(ppk.headers, secret)
            cipher_key, iv, mac_key = derived[:32], derived[32:48], derived[48:]
        else:
            cipher_key, iv, mac_key = b"", b"", b""
    blob = ppk.private_blob
    if ppk.encrypted:
        if not blob or len(blob) % 16:
            raise PpkError("the private key block is damaged (not whole cipher blocks)")
        decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
        blob = decryptor.update(blob) + decryptor.finalize()
    return blob, mac_key, hash_name


def _mac(ppk: PpkFile, clear: bytes, mac_key: bytes, hash_name: str) -> bytes:
    signed = b"".join(
        _ssh_string(field)
        for field in (
            ppk.algorithm.encode(),
            ppk.encryption.encode(),
            ppk.comment.encode("utf-8"),
            ppk.public_blob,
            clear,
        )
    )
    return hmac.new(mac_key, signed, hash_name).digest()


def _verify_mac(ppk: PpkFile, clear: bytes, mac_key: bytes, hash_name: str) -> None:
    expected = _mac(ppk, clear, mac_key, hash_name)
    if hmac.compare_digest(expected, ppk.mac):
        return
    if ppk.encrypted:
        raise PpkPassphraseError("wrong passphrase, or the file is damaged (MAC mismatch)")
    raise PpkError("the file is damaged or was edited (MAC mismatch)")


def _private_key(ppk: PpkFile, clear: bytes) -> PrivateKeyTypes:
    pub = _Reader(ppk.public_blob, "public key")
    priv = _Reader(clear, "private key")
    if pub.string().decode("ascii", "replace") != ppk.algorithm:
        raise PpkError("the public key does not match the algorithm line")
    algo = ppk.algorithm
    key: PrivateKeyTypes
    if algo == "ssh-rsa":
        e, n = pub.mpint(), pub.mpint()
        d, p, q = priv.mpint(), priv.mpint(), priv.mpint()
        if p * q != n:
            raise PpkError("the private key does not match the public key")
        key = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=rsa.rsa_crt_dmp1(d, p),
            dmq1=rsa.rsa_crt_dmq1(d, q),
            # Recomputed rather than trusted: it only speeds signing up.
            iqmp=rsa.rsa_crt_iqmp(p, q),
            public_numbers=rsa.RSAPublicNumbers(e, n),
        ).private_key()
    elif algo.startswith("ecdsa-sha2-"):
        curve = _CURVES.get(pub.string().decode("ascii", "replace"))
        if curve is None or algo.removeprefix("ecdsa-sha2-") not in _CURVES:
            raise PpkError(f"unsupported ECDSA curve in {algo}")
        point = pub.string()
        key = ec.derive_private_key(priv.mpint(), curve)
        own = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        if own != point:
            raise PpkError("the private key does not match the public key")
    elif algo in ("ssh-ed25519", "ssh-ed448"):
        point = pub.string()
        # PuTTY stores the EdDSA private key as the little-endian seed bytes.
        seed = priv.string()
        maker = ed25519.Ed25519PrivateKey if algo == "ssh-ed25519" else ed448.Ed448PrivateKey
        try:
            key = maker.from_private_bytes(seed)
        except ValueError:
            raise PpkError("the private key has the wrong length") from None
        own = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if own != point:
            raise PpkError("the private key does not match the public key")
    else:
        raise PpkError(f"key type {algo} is not supported (RSA, ECDSA and EdDSA keys are)")
    return key


def convert(data: bytes, passphrase: str | None = None) -> asyncssh.SSHKey:
    """The key in a ``.ppk`` file, MAC verified, with its comment.

    Raises PpkPassphraseError for a missing or wrong passphrase, PpkError otherwise.
    """
    ppk = parse(data)
    clear, mac_key, hash_name = _decrypt(ppk, passphrase)
    _verify_mac(ppk, clear, mac_key, hash_name)
    key = _private_key(ppk, clear)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ssh_key = asyncssh.import_private_key(der)
    if ppk.comment:
        ssh_key.set_comment(ppk.comment)
    return ssh_key


def to_openssh(
    data: bytes, passphrase: str | None = None, new_passphrase: str | None = None
) -> bytes:
    """The ``.ppk`` key as an OpenSSH private key file, encrypted with ``new_passphrase``
    (bcrypt KDF, as ssh-keygen does) when one is given."""
    key = convert(data, passphrase)
    if new_passphrase:
        out: bytes = key.export_private_key("openssh", new_passphrase)
    else:
        out = key.export_private_key("openssh")
    return out


# puttygen's defaults for a new v3 file (Argon2id, 8 MiB, one lane); it calibrates the
# passes to its speed (8 here), 13 is about 50 ms here.
PPK_ARGON2 = {"Argon2-Memory": "8192", "Argon2-Passes": "13", "Argon2-Parallelism": "1"}


def _mpint(value: int) -> bytes:
    return _ssh_string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


def _private_blob(key: PrivateKeyTypes) -> bytes:
    """PuTTY's private half: RSA d, p, q, iqmp; ECDSA the scalar; EdDSA the seed."""
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        return _mpint(n.d) + _mpint(n.p) + _mpint(n.q) + _mpint(n.iqmp)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _mpint(key.private_numbers().private_value)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return _ssh_string(raw)
    raise PpkError(f"key type {type(key).__name__} cannot be written for PuTTY")


def _lines(blob: bytes) -> list[str]:
    text = base64.b64encode(blob).decode("ascii")
    return [text[i : i + 64] for i in range(0, len(text), 64)]


def to_ppk(key: asyncssh.SSHKey, passphrase: str | None = None) -> bytes:
    """``key`` as a PuTTY v3 key file (what PuTTY 0.75 and later read), with its comment;
    encrypted with ``passphrase`` (AES-256-CBC, Argon2id as puttygen does) when given."""
    der = key.export_private_key("pkcs8-der")
    private = serialization.load_der_private_key(der, None)
    clear = _private_blob(private)
    algorithm = key.get_algorithm()
    comment = key.get_comment() or ""
    headers = {"PuTTY-User-Key-File-3": algorithm}
    if passphrase:
        headers |= {"Key-Derivation": "Argon2id", **PPK_ARGON2}
        headers["Argon2-Salt"] = os.urandom(16).hex()
        derived = _argon2(headers, passphrase.encode("utf-8"))
        cipher_key, iv, mac_key = derived[:32], derived[32:48], derived[48:]
        clear += os.urandom(-len(clear) % 16)  # whole cipher blocks; the MAC covers it
        encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
        stored = encryptor.update(clear) + encryptor.finalize()
    else:
        mac_key, stored = b"", clear
    ppk = PpkFile(
        version=3,
        algorithm=algorithm,
        encryption="aes256-cbc" if passphrase else "none",
        comment=comment,
        public_blob=key.public_data,
        private_blob=stored,
        mac=b"",
        headers=headers,
    )
    public = _lines(ppk.public_blob)
    private_lines = _lines(stored)
    out = [
        f"PuTTY-User-Key-File-3: {algorithm}",
        f"Encryption: {ppk.encryption}",
        f"Comment: {comment}",
        f"Public-Lines: {len(public)}",
        *public,
    ]
    if passphrase:
        out += [f"{name}: {headers[name]}" for name in ("Key-Derivation", *PPK_ARGON2)]
        out.append(f"Argon2-Salt: {headers['Argon2-Salt']}")
    out += [f"Private-Lines: {len(private_lines)}", *private_lines]
    out.append(f"Private-MAC: {_mac(ppk, clear, mac_key, 'sha256').hex()}")
    return ("\n".join(out) + "\n").encode("utf-8")
