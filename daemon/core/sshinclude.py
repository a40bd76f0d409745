"""The one ``Include`` line that ``jobtunnel ssh-config --install`` puts at the top of the
user's ``~/.ssh/config``, and nothing else: adding it, finding it, removing exactly it.

At the top, before any ``Host`` or ``Match`` line, the included file is read in the
global context, so its blocks apply like the user's own; OpenSSH uses the first value it
obtains for a keyword, so nothing the user wrote for *other* hosts changes. Pure.
"""

from __future__ import annotations

import re

__all__ = ["add", "include_line", "includes", "remove", "syntax_problem"]

MARK = "  # added by `jobtunnel ssh-config --install`"
_KEYWORD = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+|$)(.*)")
# OpenSSH expands globs, and in newer releases tokens, in an Include's argument.
_UNSAFE_PATH = re.compile(r'[\n\r\0"\\%*?\[\]]')


def include_line(path: str) -> str:
    """``Include "PATH"`` plus a comment saying who added it; ValueError for a path
    OpenSSH would not read back as one literal file name."""
    if _UNSAFE_PATH.search(path):
        raise ValueError(f"{path!r} holds a character an Include line cannot carry literally")
    return f'Include "{path}"{MARK}'


def _words(line: str) -> tuple[str, str] | None:
    """(keyword lowercased, rest) of a config line; None for blank and comment lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    m = _KEYWORD.match(stripped)
    if m is None:
        return ("", stripped)
    return (m.group(1).lower(), m.group(2))


def includes(text: str, path: str) -> int | None:
    """The 1-based line of an ``Include`` naming ``path`` (any spelling of the quotes), or
    None."""
    for number, line in enumerate(text.splitlines(), start=1):
        words = _words(line)
        if words is None or words[0] != "include":
            continue
        args = re.findall(r'"([^"]*)"|(\S+)', words[1].split("#", 1)[0])
        if any(path in (quoted, bare) for quoted, bare in args):
            return number
    return None


def syntax_problem(text: str) -> tuple[int, str] | None:
    """(line, what is wrong) for a line OpenSSH could not even split into a keyword and
    its arguments: no keyword, a keyword without a value, an unclosed quote. The real
    ``ssh -G`` check (where ssh is installed) judges the rest."""
    for number, line in enumerate(text.splitlines(), start=1):
        words = _words(line)
        if words is None:
            continue
        keyword, rest = words
        if not keyword:
            return number, f"{line.strip()[:40]!r} does not start with a keyword"
        if not rest.strip():
            return number, f"{keyword} has no value"
        if rest.split("#", 1)[0].count('"') % 2:
            return number, "a quote is not closed"
    return None


def add(text: str, line: str) -> str:
    """``text`` with ``line`` first; every other byte as it was."""
    newline = "\r\n" if "\r\n" in text else "\n"
    return line + newline + text


def remove(text: str, line: str) -> str | None:
    """``text`` without the one line equal to ``line`` (None when it is not there)."""
    kept = text.splitlines(keepends=True)
    for i, each in enumerate(kept):
        if each.rstrip("\r\n") == line:
            return "".join(kept[:i] + kept[i + 1 :])
    return None
