"""Reading what a cluster serves over the tunnel's own SSH connection (no second login):
its listening sockets and Jupyter's runtime files through SFTP (an exec channel where
SFTP is refused), a short HTTP probe of each new port for its page title, and a TLS
probe of a forward's target for the scheme to open it with. Every read is bounded in
bytes, time and channels; the parsing is :mod:`..core.discovery`'s and :mod:`..core.tls`'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import ssl
from typing import cast

import asyncssh

from ..core import discovery, tls
from ..core.discovery import Found, Jupyter

__all__ = ["PROBE_CHANNELS", "ClusterFiles", "client_hello", "discover", "probe", "speaks_tls"]

log = logging.getLogger(__name__)

RUNTIME_DIR = ".local/share/jupyter/runtime"  # relative to the job user's home
PROC_FILES = ("/proc/net/tcp", "/proc/net/tcp6")
READ_TIMEOUT = 5.0
PROBE_TIMEOUT = 2.0
PROBE_CHANNELS = 3  # probes at once, beside the forwards' own channels
MAX_PROBES = 8  # new ports probed per discovery; the rest next time


async def _read_sftp(sftp: asyncssh.SFTPClient, path: str, limit: int) -> str | None:
    try:
        async with sftp.open(path, "rb") as f:
            data = await f.read(limit)
    except (asyncssh.SFTPError, OSError):
        return None
    # Opened "rb": bytes, whatever asyncssh's generic type says.
    return cast(bytes, data).decode("utf-8", "replace")


async def _reread(f: asyncssh.SFTPClientFile, limit: int) -> str:
    """The whole of a /proc table through a handle kept open: one read request (and
    one more that finds the end) from offset 0, where the kernel makes it anew."""
    data = b""
    while len(data) < limit:
        chunk = cast(bytes, await f.read(limit - len(data), len(data)))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


class ClusterFiles:
    """The cluster's files over one SFTP session kept for the link's life; an exec
    channel for the socket table where SFTP is refused.

    A look is what idle tunnels pay for every ``discover_interval``, so it is kept to a
    few requests: the socket tables' handles stay open and are read again from offset 0,
    and Jupyter's runtime folder is listed again only when its mtime or the set of
    listening ports changed (a new server listens on a new port), once more on the look
    after such a change (its file may land in the same second as the listing, and SFTP's
    mtime has whole seconds)."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self._sftp: asyncssh.SFTPClient | None = None
        self._refused = False
        self._tables: dict[str, asyncssh.SFTPClientFile | None] = {}
        self._listed: tuple[int | None, frozenset[int]] | None = None
        self._list_again = False
        self._runtimes: list[str] = []

    async def _client(self) -> asyncssh.SFTPClient | None:
        if self._sftp is None and not self._refused:
            try:
                self._sftp = await self.conn.start_sftp_client()
            except (asyncssh.Error, OSError) as exc:
                log.debug("no SFTP (%s); the socket table comes through exec", exc)
                self._refused = True
        return self._sftp

    async def tables(self) -> list[str]:
        """The texts of /proc/net/tcp and /proc/net/tcp6 (those that can be read)."""
        sftp = await self._client()
        if sftp is None:
            return await _proc_by_exec(self.conn)
        try:
            texts = []
            for path in PROC_FILES:
                if path not in self._tables:
                    try:
                        self._tables[path] = await sftp.open(path, "rb", block_size=0)
                    except asyncssh.SFTPError:
                        self._tables[path] = None  # not on this cluster (no IPv6)
                f = self._tables[path]
                if f is not None:
                    texts.append(await _reread(f, discovery.MAX_FILE_BYTES))
            return texts
        except (asyncssh.Error, OSError):
            self.close()  # a session that broke: a new one next time
            raise

    async def runtimes(self, runtime_dir: str, ports: frozenset[int]) -> list[str]:
        """The texts of Jupyter's runtime files, read again only when they may differ."""
        sftp = await self._client()
        if sftp is None:
            return []
        try:
            try:
                mtime: int | None = (await sftp.stat(runtime_dir)).mtime
            except asyncssh.SFTPError:
                mtime = -1  # no folder: no Jupyter yet
            seen = (mtime, ports)
            if seen == self._listed and mtime is not None and not self._list_again:
                return self._runtimes
            self._list_again = seen != self._listed
            self._runtimes = [] if mtime == -1 else await _runtime_files(sftp, runtime_dir)
            self._listed = seen
            return self._runtimes
        except (asyncssh.Error, OSError):
            self.close()
            raise

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()  # its handles go with it
            self._sftp = None
        self._tables = {}
        self._listed = None


async def _runtime_files(sftp: asyncssh.SFTPClient, runtime_dir: str) -> list[str]:
    try:
        names = await sftp.listdir(runtime_dir)
    except asyncssh.SFTPError:
        return []
    wanted = sorted(
        str(n)
        for n in names
        if str(n).endswith(".json") and str(n).startswith(("jpserver-", "nbserver-"))
    )
    runtimes: list[str] = []
    for name in wanted[: discovery.MAX_RUNTIME_FILES]:
        text = await _read_sftp(
            sftp, posixpath.join(runtime_dir, name), discovery.MAX_RUNTIME_BYTES + 1
        )
        if text is not None:
            runtimes.append(text)
    return runtimes


async def _proc_by_exec(conn: asyncssh.SSHClientConnection) -> list[str]:
    limit = discovery.MAX_FILE_BYTES
    texts = []
    for path in PROC_FILES:
        try:
            result = await conn.run(f"head -c {limit} {path}", check=False, timeout=READ_TIMEOUT)
        except (asyncssh.Error, OSError, TimeoutError):
            continue
        out = result.stdout
        if result.exit_status == 0 and out:
            texts.append(out if isinstance(out, str) else out.decode("utf-8", "replace"))
    return texts


async def _title(conn: asyncssh.SSHClientConnection, port: int) -> str | None:
    """What an HTTP GET / answers on the cluster's ``port``: its page title, "" for
    HTTP without one, None when it is not HTTP (or says nothing in time)."""
    writer: asyncssh.SSHWriter[bytes] | None = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await conn.open_connection("127.0.0.1", port, encoding=None)
            writer.write(b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: jobtunnel\r\n\r\n")
            data = b""
            while len(data) < 65536:
                chunk = await reader.read(65536 - len(data))
                if not chunk:
                    break
                data += chunk
                if b"</title" in data.lower():
                    break
    except (asyncssh.Error, OSError, TimeoutError):
        data = b"" if writer is None else data  # refused: not HTTP
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
    return discovery.clean_title(data) if data else None


def client_hello(server_name: str = "localhost") -> bytes:
    """A real ClientHello: the first flight of the ssl module's own client."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    # It stops to wait for the ServerHello, as expected: the hello is in ``outgoing``.
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


async def speaks_tls(conn: asyncssh.SSHClientConnection, host: str, port: int) -> bool | None:
    """Whether the service at ``host:port`` (as the cluster sees it) answers a
    ClientHello as TLS; None when no channel to it opens (nothing listens there yet, or
    the link is going), so that it is asked again later."""
    writer: asyncssh.SSHWriter[bytes] | None = None
    first = b""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await conn.open_connection(host, port, encoding=None)
            writer.write(client_hello())
            while len(first) < tls.ANSWER_BYTES:
                chunk = await reader.read(tls.ANSWER_BYTES - len(first))
                if not chunk:
                    break
                first += chunk
    except (asyncssh.Error, OSError, TimeoutError):
        if writer is None:
            return None
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
    return tls.answers_tls(first)


async def discover(
    files: ClusterFiles | asyncssh.SSHClientConnection,
    known: dict[int, Found] | None = None,
    runtime_dir: str | None = None,
) -> tuple[dict[int, Found], discovery.Sockets]:
    """Every service the cluster serves to loopback, read at once (no probe yet): ports
    in ``known`` keep what was learnt of them; new ones are ``probed=False`` until
    :func:`probe` has asked them."""
    known = known or {}
    once = not isinstance(files, ClusterFiles)
    reader = ClusterFiles(files) if not isinstance(files, ClusterFiles) else files
    sockets = discovery.Sockets()
    try:
        async with asyncio.timeout(READ_TIMEOUT * 3):
            for text in await reader.tables():
                discovery.parse_proc_net_tcp(text, sockets)
            ports = frozenset(sockets.ports)
            runtimes = await reader.runtimes(runtime_dir or RUNTIME_DIR, ports)
    finally:
        if once:
            reader.close()
    jupyters: dict[int, Jupyter] = {}
    for text in runtimes:
        server = discovery.parse_jupyter_runtime(text)
        if server is not None and server.port in sockets.ports:
            jupyters[server.port] = server
    found: dict[int, Found] = {}
    for port in sockets.ports:
        before = known.get(port)
        if port in jupyters or before is None or before.kind == "jupyter":
            found[port] = discovery.kind_of(port, jupyters, None, probed=False)
        else:
            found[port] = before
    return found, sockets


async def probe(conn: asyncssh.SSHClientConnection, found: dict[int, Found]) -> dict[int, Found]:
    """Ask the ports not yet asked what they are (an HTTP GET for its title): at most
    :data:`MAX_PROBES` per call over :data:`PROBE_CHANNELS` channels; the rest wait for
    the next call. The system's own ports (below 1024) are not asked."""
    todo = [p for p, f in sorted(found.items()) if not f.probed and p >= 1024][:MAX_PROBES]
    gate = asyncio.Semaphore(PROBE_CHANNELS)
    learnt: dict[int, Found] = {}

    async def one(port: int) -> None:
        async with gate:
            title = await _title(conn, port)
        learnt[port] = discovery.kind_of(port, {}, title)

    await asyncio.gather(*(one(p) for p in todo))
    return learnt
