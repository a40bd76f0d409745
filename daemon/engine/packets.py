"""What jobtunnel changes in asyncssh's outgoing packet stream, and why.

asyncssh 2.24 sends an empty ``SSH_MSG_IGNORE`` before every packet once keys are in use
(``SSHConnection.send_packet``). That is RFC 4251 §9.3.1's countermeasure against the
chosen-plaintext attack on CBC mode, where the next packet's IV is predictable. With the
ciphers jobtunnel negotiates (AES-GCM, ChaCha20-Poly1305, AES-CTR) there is no such IV,
and the extra packet costs one more encryption, one more ``getrandom`` and one more
``write`` per packet: about a quarter of the daemon's CPU per forwarded round trip and
per new connection (py-spy, benchmarks/tunnels.py). OpenSSH never sends it.

:func:`skip_cbc_countermeasure` drops that packet on one connection, and only while the
negotiated cipher is not a CBC one.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

__all__ = ["is_cbc", "skip_cbc_countermeasure"]

# What asyncssh's send_packet passes for its countermeasure packet.
_EMPTY_IGNORE = (String(b""),)


def is_cbc(cipher: str) -> bool:
    """True for the CBC-mode SSH ciphers (``aes128-cbc``, ``seed-cbc@ssh.com``...)."""
    return cipher.endswith("-cbc") or "-cbc@" in cipher


def skip_cbc_countermeasure(conn: asyncssh.SSHClientConnection) -> None:
    """Wrap ``conn.send_packet`` so that the empty ``SSH_MSG_IGNORE`` asyncssh puts in
    front of each packet is not sent, unless the cipher in use is CBC. Call it from
    ``SSHClient.connection_made``, before key exchange."""
    send_packet = conn.send_packet

    def send_packet_without_countermeasure(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == _EMPTY_IGNORE
            and not is_cbc(conn.get_extra_info("send_cipher", "") or "")
        ):
            return
        send_packet(pkttype, *args, handler=handler)

    # An instance attribute: asyncssh's own calls (self.send_packet) go through it.
    conn.send_packet = send_packet_without_countermeasure  # type: ignore[method-assign]
