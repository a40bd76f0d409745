"""Find cluster SSH endpoints in job logs: sans-I/O, incremental, bounded memory.

A :class:`Detector` is fed the bytes of one file as they arrive and returns what it found
in the lines completed so far. It never touches the file system or the network.

Most of a large log holds no endpoint, so lines are only decoded and read closely near a
username (found with a fast byte search) or, for hints such as ``Public IP: ...`` that may
precede the username, in the last few lines of each block. Everything else is only counted.

Files are untrusted, so the work is linear in the input: every long repeat in a pattern is
possessive (no backtracking), each line read closely is searched a fixed number of times
(its hosts once, not once per username on it), and what a line may add is capped
(MAX_HINTS per line, MAX_PENDING usernames waiting at once).
"""

from __future__ import annotations

import codecs
import html
import ipaddress
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .address import check_host

__all__ = [
    "DEFAULT_USERNAME_PATTERN",
    "Detector",
    "Endpoint",
    "EndpointSet",
    "Rejection",
    "job_id_of",
]

# Bounded repeats keep matching linear on hostile runs of letters.
DEFAULT_USERNAME_PATTERN = r"u[a-z]{0,16}prod_[A-Za-z0-9]{1,64}"

# Lines on either side of a username in which its host and port may be named.
WINDOW = 8
# Longest line kept whole; longer ones are read in slices that overlap by OVERLAP bytes.
MAX_LINE = 1 << 20
OVERLAP = 512
# Cap per file so that a hostile log cannot grow memory without bound.
MAX_ENDPOINTS = 1000
MAX_REJECTIONS = 100

# Hosts (or lone ports) kept per line, and usernames waiting for an address at once.
MAX_HINTS = 8
MAX_PENDING = 64

# Possessive repeats (``*+``, ``++``, ``{m,n}+``) never give back what they took: written so
# only where giving back could not have found another match, they keep every search linear.
_ANSI = re.compile(r"\x1b\[[0-9;?]{0,32}+[ -/]{0,4}+[@-~]|\x1b\][^\x07\x1b]{0,512}+(?:\x07|\x1b\\)")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,32}+(?:\s[^<>]{0,2048}+)?/?>")
_AT_SPACE = re.compile(r"@\s++")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_SPACES = dict.fromkeys(map(ord, "\xa0\u2007\u202f\u2009\u3000"), " ")

_IPV6_BARE = r"(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"
# A name: runs of letters and digits joined by runs of dots and dashes (so it ends in one).
_HOSTCHARS = rf"\[[0-9A-Fa-f:.%]{{1,64}}+\]|{_IPV6_BARE}|[A-Za-z0-9]++(?:[.-]++[A-Za-z0-9]++)*+"
_PORT_OPTION = re.compile(
    r"""(?:^|\s)-p\s*+(\d++)\b|-o\s*+["']?+Port[=\s]\s*+(\d++)"""
    r"""|\bport\b\s*+(?:number)?+\s*+[:=#]?+\s*+(\d++)\b""",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?!\w|\.\w)")
_IPV6_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.%]{1,64}+)\](?::(\d++))?+")
_IPV6_FREE = re.compile(rf"(?<![\w:.\[])({_IPV6_BARE})")
_DOTTED_NAME = re.compile(r"(?<![\w./@-])([A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++){2,}+)(?![\w/@-])")
_LABELLED_HOST = re.compile(
    r"\b(?:(?:public|external|master(?:\s++node)?+|cluster|head\s*+node)\s++)?"
    r"(?:ip(?:v[46])?+(?:\s*+address)?+|address|host(?:\s*+name)?+|server|master(?:\s++node)?+)"
    rf"\s*+[:=]\s*+({_HOSTCHARS})(?::(\d++))?+",
    re.IGNORECASE,
)
_CONNECTING = re.compile(
    rf"\b(?:connecting|authenticating)\s++to\s++({_HOSTCHARS})(?:\s++\[[^\]]{{0,256}}+\])?+"
    r"(?::(\d++)|\s++port\s++(\d++))?+",
    re.IGNORECASE,
)
# Characters that never end an address in a command a person would run as printed.
_SHELL_CHARS = frozenset("$`|&<>(){}\\")
_SSH_CONTEXT = re.compile(r"\bssh\b|\bconnect|\bhost|\bnode\b|\baddress", re.IGNORECASE)
_NOTEBOOK = re.compile(
    r"https?://[^\s\"'<>/]{1,253}+(?:/[^\s\"'<>/?]{0,256}+){0,8}?/notebooks?/"
    r"[^\s\"'<>?]{0,512}+\?token=[^\s\"'<>;,]{1,512}+"
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]{0,31}+://[^\s\"'<>]++", re.IGNORECASE)
# Endings that make a dotted word a file name rather than a host in free text.
_FILE_ENDINGS = frozenset(
    {
        "gz",
        "tgz",
        "bz2",
        "xz",
        "zip",
        "tar",
        "sh",
        "py",
        "log",
        "txt",
        "out",
        "err",
        "csv",
        "tsv",
        "json",
        "xml",
        "yaml",
        "yml",
        "pem",
        "key",
        "pub",
        "ppk",
        "html",
        "htm",
        "sim",
        "dat",
        "cfg",
        "conf",
        "ini",
        "inp",
        "cas",
        "msh",
        "stl",
        "exe",
        "dll",
        "so",
        "jar",
        "bat",
        "ps1",
        "md",
        "rst",
        "pdf",
        "png",
        "jpg",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """A cluster's SSH endpoint as found in a log."""

    user: str
    host: str
    port: int
    job_id: str | None
    source: str
    line: int
    notebook_url: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity: (user, host, port)."""
        return (self.user, self.host, self.port)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "file": self.source,
            "line": self.line,
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "job_id": self.job_id,
        }
        if self.notebook_url:
            out["notebook_url"] = self.notebook_url
        return out


@dataclass(frozen=True)
class Rejection:
    """Something that looked like an endpoint but may not be acted on, and why."""

    source: str
    line: int
    candidate: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: ignored {self.candidate}: {self.reason}"


Finding = Endpoint | Rejection


def job_id_of(user: str) -> str | None:
    """The job id in a Rescale username (``u[a-z]*prod_<id>`` -> ``<id>``), else None."""
    head, sep, job = user.partition("_")
    if not (sep and job.isascii() and job.isalnum() and head.isascii() and head.isalpha()):
        return None
    return job if head.islower() and head.startswith("u") and head[1:].endswith("prod") else None


@dataclass
class _Hint:
    """A host (maybe with a port) or a lone port named on some line."""

    line: int
    host: str | None
    port: int | None
    strong: bool  # labelled or on an ssh/connect line, not just an address in free text
    # check_host's verdict on ``host``, worked out once when the hint is made.
    checked: str = ""
    reason: str | None = None


@dataclass
class _Pending:
    """A username seen without an address; waits up to WINDOW lines for one."""

    user: str
    line: int
    hosts: list[_Hint] = field(default_factory=list)
    ports: list[_Hint] = field(default_factory=list)


class Detector:
    """Incremental endpoint detection over the bytes of one file.

    ``feed`` returns the findings in the lines completed by that chunk; ``close`` ends
    the file (the last line needs no newline) and returns the rest. Any split of the same
    bytes into chunks gives the same findings.
    """

    def __init__(
        self,
        source: str,
        *,
        username_pattern: str = DEFAULT_USERNAME_PATTERN,
        allow_private_addresses: bool = False,
        max_endpoints: int = MAX_ENDPOINTS,
    ) -> None:
        self.source = source
        self.allow_private = allow_private_addresses
        self.max_endpoints = max_endpoints
        self._user = re.compile(rf"(?<![A-Za-z0-9_])(?:{username_pattern})(?![A-Za-z0-9_])")
        self._user_bytes = re.compile(
            rf"(?<![A-Za-z0-9_])(?:{username_pattern})(?![A-Za-z0-9_])".encode()
        )
        # A literal every default-pattern username holds: bytes.find beats the regex engine.
        self._literal = b"prod_" if username_pattern == DEFAULT_USERNAME_PATTERN else None
        self._pair = re.compile(
            rf"(?:ssh://)?(?<![A-Za-z0-9_])({username_pattern})@({_HOSTCHARS})(?::(\d++))?+"
        )
        self._head = b""  # bytes kept until the encoding is known
        self._decoder: codecs.IncrementalDecoder | None = None
        self._started = False
        self._partial = b""
        self._line = 0  # lines completed so far
        self._scanned_to = 0  # lines up to this number were read closely
        self._hints: deque[_Hint] = deque()
        self._pending: dict[str, _Pending] = {}
        self._notebooks: deque[tuple[int, str]] = deque(maxlen=16)
        self._emitted: dict[tuple[str, str, int], Endpoint] = {}
        # Emitted endpoints by job id, with their place in ``_emitted``.
        self._by_job: dict[str, list[tuple[int, tuple[str, str, int]]]] = {}
        self._rejections = 0

    # -- bytes in -------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Finding]:
        """Take the next bytes of the file; return findings in lines they completed."""
        if not self._started:
            self._head += data
            if len(self._head) < 4:
                return []
            data, self._head = self._start(self._head), b""
        elif self._decoder is not None:
            data = self._decoder.decode(data).encode("utf-8")
        return self._take(data, final=False)

    def close(self) -> list[Finding]:
        """End of file: read the unterminated last line and settle waiting usernames."""
        data = b""
        if not self._started:
            data, self._head = self._start(self._head), b""
        if self._decoder is not None:
            data += self._decoder.decode(b"", final=True).encode("utf-8")
        out = self._take(data, final=True)
        out += self._settle(upto=None)
        return out

    def flush(self) -> list[Finding]:
        """Settle waiting usernames now, as if their window had passed.

        For a live file that went quiet: the file may grow later, but a username whose
        address is already known should not wait for lines that may never come.
        """
        return self._settle(upto=None)

    def _start(self, head: bytes) -> bytes:
        """Pick the encoding from the first bytes (BOM, or NULs of BOM-less UTF-16)."""
        self._started = True
        encoding = None
        if head.startswith(codecs.BOM_UTF8):
            head = head[3:]
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        elif len(head) >= 4 and head[1] == 0 and head[3] == 0 and head[0] and head[2]:
            encoding = "utf-16-le"
        elif len(head) >= 4 and head[0] == 0 and head[2] == 0 and head[1] and head[3]:
            encoding = "utf-16-be"
        if encoding is None:
            return head
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        return self._decoder.decode(head).encode("utf-8")

    def _take(self, data: bytes, *, final: bool) -> list[Finding]:
        buf = self._partial + data if self._partial else data
        cut = buf.rfind(b"\n")
        out: list[Finding] = []
        if cut >= 0:
            block, self._partial = buf[: cut + 1], buf[cut + 1 :]
            out += self._block(block)
        else:
            self._partial = buf
        if final and self._partial:
            out += self._block(self._partial + b"\n")
            self._partial = b""
        elif len(self._partial) > MAX_LINE:
            # One enormous line: read what we have, keep an overlap for a split match.
            out += self._slice(self._partial)
            self._partial = self._partial[-OVERLAP:]
        return out

    def _slice(self, data: bytes) -> list[Finding]:
        """Read a slice of an over-long line (only if a username is in it) without ending it."""
        if not self._pending and not self._user_offsets(data):
            return []
        return self._read_line(self._line + 1, data)

    # -- blocks of complete lines ---------------------------------------------------

    def _block(self, block: bytes) -> list[Finding]:
        """Read a run of complete lines closely only near usernames and at its end."""
        first = self._line + 1
        count = block.count(b"\n")
        hits = self._user_offsets(block)
        wanted: list[tuple[int, int]] = []  # byte ranges to read closely
        if self._pending:
            wanted.append((0, _nth_line_end(block, 0, WINDOW)))
        if hits:
            for pos in hits:
                wanted.append(
                    (_nth_line_start(block, pos, WINDOW), _nth_line_end(block, pos, WINDOW))
                )
        # The tail may hold hints for a username in the next block.
        wanted.append((_nth_line_start(block, len(block) - 1, WINDOW - 1), len(block)))
        out: list[Finding] = []
        line = first
        pos = 0
        for start, end in _merge(wanted):
            if start > pos:
                line += block.count(b"\n", pos, start)
                self._expire(line)
            pos = start
            while pos < end:
                nl = block.find(b"\n", pos, end)
                stop = end if nl < 0 else nl
                out += self._read_line(line, block[pos:stop])
                if self._pending:
                    out += self._settle(upto=line)
                line += 1
                pos = stop + 1
                self._expire(line)
        self._line = first + count - 1
        out += self._settle(upto=self._line)
        return out

    def _user_offsets(self, block: bytes) -> list[int]:
        """Where usernames may be: the first hit on each line that has one.

        A username that is a folder in a path (``/enc/uprod_x/work``, which real logs print
        on every other line) is no hit: it never names an endpoint, and reading the lines
        around each one closely would make detection ten times slower.
        """
        offsets: list[int] = []
        pos = 0
        while True:
            if self._literal is None:
                m = self._user_bytes.search(block, pos)
                if m is None:
                    return offsets
                hit = m.start()
            else:
                hit = block.find(self._literal, pos)
                if hit < 0:
                    return offsets
                # The username around the literal, if it is one (the id is at most 64 long).
                m = self._user_bytes.search(block, max(0, hit - 17), hit + len(self._literal) + 65)
                if m is not None and m.start() > hit:
                    m = None
            if m is not None and _in_path(block, m.start(), m.end()):
                pos = m.end()
                continue
            offsets.append(hit)
            pos = block.find(b"\n", hit) + 1
            if pos == 0:
                return offsets

    # -- one line -------------------------------------------------------------------

    def _read_line(self, number: int, raw: bytes) -> list[Finding]:
        text = _normalise(raw)
        out: list[Finding] = []
        for m in _NOTEBOOK.finditer(text) if "/notebook" in text else ():
            self._notebooks.append((number, m.group(0)))
            out += self._attach_notebook(m.group(0))
        if "://" in text:
            text = _URL.sub(lambda m: " " if "@" not in m.group(0) else m.group(0), text)
        line_port = _first_port(text)
        paired_users: set[str] = set()
        for m in self._pair.finditer(text):
            user, host, port_text = m.group(1), m.group(2), m.group(3)
            paired_users.add(user)
            if text[m.end() : m.end() + 1] in _SHELL_CHARS:
                out += self._reject(
                    number, m.group(0) + text[m.end()], "shell metacharacters after the address"
                )
                continue
            port = int(port_text) if port_text else line_port
            out += self._found(user, host, port if port is not None else 22, number, m.group(0))
        hints = self._line_hints(number, text, line_port)
        self._hints.extend(hints)
        free: list[_Hint] | None = None  # this line's hosts: worked out once, if needed
        for m in self._user.finditer(text):
            user = m.group(0)
            if user in paired_users or _in_path(text, m.start(), m.end()):
                continue
            paired_users.add(user)  # the rest of this line says nothing new about it
            pending = self._waiting(user, number)
            if pending is None:
                out += self._reject(
                    number, user, f"more than {MAX_PENDING} usernames waiting for an address"
                )
                continue
            if free is None:
                # An address on the username's own line is strong evidence even unlabelled.
                free = _free_hosts(text, number)[:MAX_HINTS]
                for hint in free:
                    self._check(hint)
            pending.line = number
            pending.hosts = [h for h in self._hints if h.host is not None]
            pending.ports = [h for h in self._hints if h.host is None]
            pending.hosts += free
            if line_port is not None:
                pending.ports.append(_Hint(number, None, line_port, True))
        if hints:
            for pending in self._pending.values():
                if pending.line != number and abs(number - pending.line) <= WINDOW:
                    pending.hosts += [h for h in hints if h.host is not None]
                    pending.ports += [h for h in hints if h.host is None]
        return out

    def _line_hints(self, number: int, text: str, port: int | None) -> list[_Hint]:
        """Labelled hosts on a line (at most MAX_HINTS), else its port if it names one."""
        hints: list[_Hint] = []
        for m in _CONNECTING.finditer(text):
            if len(hints) >= MAX_HINTS:
                break
            port_text = m.group(2) or m.group(3)
            hints.append(_Hint(number, m.group(1), int(port_text) if port_text else None, True))
        for m in _LABELLED_HOST.finditer(text):
            if len(hints) >= MAX_HINTS:
                break
            hints.append(_Hint(number, m.group(1), int(m.group(2)) if m.group(2) else None, True))
        for hint in hints:
            self._check(hint)
        if not hints and port is not None:
            hints.append(_Hint(number, None, port, True))
        return hints

    def _check(self, hint: _Hint) -> None:
        assert hint.host is not None
        hint.checked, hint.reason = check_host(hint.host, self.allow_private)

    def _waiting(self, user: str, number: int) -> _Pending | None:
        """The waiting entry of ``user`` (made now if new; None when too many wait)."""
        pending = self._pending.get(user)
        if pending is None and len(self._pending) < MAX_PENDING:
            pending = self._pending[user] = _Pending(user, number)
        return pending

    def _expire(self, line: int) -> None:
        while self._hints and self._hints[0].line < line - WINDOW:
            self._hints.popleft()

    def _settle(self, *, upto: int | None) -> list[Finding]:
        """Resolve usernames whose window has passed by line ``upto`` (None: all of them).

        Settling right after the window's last line, not at the end of a block, keeps the
        order of findings the same however the bytes were chunked.
        """
        out: list[Finding] = []
        keep: dict[str, _Pending] = {}
        for user, pending in self._pending.items():
            if upto is not None and upto - pending.line < WINDOW:
                keep[user] = pending
                continue
            out += self._resolve(pending)
        self._pending = keep
        return out

    def _resolve(self, pending: _Pending) -> list[Finding]:
        """Pick the nearest usable host for a lone username, and its port."""

        def rank(h: _Hint) -> tuple[bool, int, int]:
            return (not h.strong, abs(h.line - pending.line), h.line)

        usable = [h for h in pending.hosts if h.reason is None]
        if usable:
            best = min(usable, key=rank)
            port = best.port
            if port is None:
                near = min(pending.ports, key=lambda h: abs(h.line - pending.line), default=None)
                port = near.port if near is not None else 22
            return self._found(pending.user, best.checked, port or 22, pending.line, None)
        if pending.hosts:
            worst = min(pending.hosts, key=rank)
            assert worst.reason is not None
            return self._reject(worst.line, f"{pending.user} at {worst.checked}", worst.reason)
        return []

    # -- results --------------------------------------------------------------------

    def _found(
        self, user: str, host_text: str, port: int, line: int, text: str | None
    ) -> list[Finding]:
        candidate = text or f"{user}@{host_text}:{port}"
        host, reason = check_host(host_text, self.allow_private)
        if reason is None and not 1 <= port <= 65535:
            reason = f"port {port} is outside 1-65535"
        if reason is not None:
            return self._reject(line, candidate, reason)
        key = (user, host, port)
        if key in self._emitted:
            return []
        if len(self._emitted) >= self.max_endpoints:
            return self._reject(
                line, candidate, f"more than {self.max_endpoints} endpoints in one file"
            )
        job = job_id_of(user)
        endpoint = Endpoint(user, host, port, job, self.source, line, self._notebook_for(job, line))
        self._emitted[key] = endpoint
        if job:
            self._by_job.setdefault(job, []).append((len(self._emitted), key))
        return [endpoint]

    def _reject(self, line: int, candidate: str, reason: str) -> list[Finding]:
        """A rejection, until MAX_REJECTIONS of them; then one notice and silence."""
        self._rejections += 1
        if self._rejections > MAX_REJECTIONS:
            return []
        if self._rejections == MAX_REJECTIONS:
            reason += f" (and {MAX_REJECTIONS} rejections in this file: no more are listed)"
        return [Rejection(self.source, line, candidate[:200], reason)]

    def _notebook_for(self, job: str | None, line: int) -> str | None:
        for seen, url in reversed(self._notebooks):
            if job and f"/{job}/" in url:
                return url
            if not job and abs(seen - line) <= WINDOW:
                return url
        return None

    def _attach_notebook(self, url: str) -> list[Finding]:
        """A notebook named after its endpoint (a ``/<job id>/`` in its path) updates it."""
        out: list[Finding] = []
        if not self._by_job:
            return out
        jobs = dict.fromkeys(url.split("/")[1:-1])  # segments with a slash on both sides
        for _, key in sorted(entry for job in jobs for entry in self._by_job.get(job, ())):
            endpoint = self._emitted[key]
            if endpoint.notebook_url != url:
                self._emitted[key] = replace(endpoint, notebook_url=url)
                out.append(self._emitted[key])
        return out


class EndpointSet:
    """The endpoints still current: a newer one for the same job id replaces the older."""

    def __init__(self) -> None:
        self._by_identity: dict[tuple[str, ...], Endpoint] = {}

    def add(self, endpoint: Endpoint) -> Endpoint | None:
        """Record an endpoint; return the one it replaced (None if new or unchanged)."""
        identity = ("job", endpoint.job_id) if endpoint.job_id else ("ep", *map(str, endpoint.key))
        old = self._by_identity.pop(identity, None)
        self._by_identity[identity] = endpoint
        return old if old is not None and old.key != endpoint.key else None

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(sorted(self._by_identity.values(), key=lambda e: (e.source, e.line)))

    def __len__(self) -> int:
        return len(self._by_identity)


# -- text helpers ---------------------------------------------------------------------


def _normalise(raw: bytes) -> str:
    """Plain text of one raw line: decoded, no ANSI codes, HTML tags or odd spaces."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.rstrip("\r")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "<" in text or "&" in text:
        text = html.unescape(_TAG.sub(" ", text))
        text = _AT_SPACE.sub("@", text)
    if text.isascii():
        return text
    return text.translate(_INVISIBLE).translate(_SPACES)


# Path separators, as characters of text and as bytes of raw lines.
_SEPARATORS: frozenset[str | int] = frozenset({"/", "\\", ord("/"), ord("\\")})


def _in_path(text: str | bytes, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is a folder in a path: a separator on both sides."""
    if start == 0 or end >= len(text):
        return False
    return text[start - 1] in _SEPARATORS and text[end] in _SEPARATORS


def _first_port(text: str) -> int | None:
    m = _PORT_OPTION.search(text)
    if m is None:
        return None
    return int(next(g for g in m.groups() if g))


def _free_hosts(text: str, number: int) -> list[_Hint]:
    """Addresses in free text on a username's line: IP literals and host-like names."""
    hints = [_Hint(number, m.group(1), None, False) for m in _IPV4.finditer(text)]
    hints += [
        _Hint(number, m.group(1), int(m.group(2)) if m.group(2) else None, False)
        for m in _IPV6_BRACKETED.finditer(text)
    ]
    for m in _IPV6_FREE.finditer(text):
        if _is_ipv6(m.group(1)):
            hints.append(_Hint(number, m.group(1), None, False))
    if not _SSH_CONTEXT.search(text):
        # A dotted word in prose is more often a file than a host.
        return hints
    for m in _DOTTED_NAME.finditer(text):
        name = m.group(1).rstrip(".")
        ending = name.rsplit(".", 1)[-1].lower()
        if ending.isalpha() and len(ending) >= 2 and ending not in _FILE_ENDINGS:
            hints.append(_Hint(number, name, None, False))
    return hints


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _nth_line_start(block: bytes, pos: int, n: int) -> int:
    """Start of the line ``n`` lines before the one holding ``pos``."""
    for _ in range(n + 1):
        pos = block.rfind(b"\n", 0, pos)
        if pos < 0:
            return 0
    return pos + 1


def _nth_line_end(block: bytes, pos: int, n: int) -> int:
    """Just past the newline ending the line ``n`` lines after the one holding ``pos``."""
    for _ in range(n + 1):
        nl = block.find(b"\n", pos)
        if nl < 0:
            return len(block)
        pos = nl + 1
    return pos


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
