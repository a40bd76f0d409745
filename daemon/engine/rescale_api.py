"""The Rescale API over HTTPS: the I/O shell around :mod:`jobtunnel.daemon.core.rescale`.

httpx, not aiohttp: pure Python (no C extension to build on any platform), one library
with the same API for the async daemon and the synchronous CLI (``rescale login`` checks
a key with one request), ``trust_env`` honours ``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``
(and the platform's proxy settings on Windows and macOS), and a :class:`httpx.Timeout` on
every request.

TLS is verified against the operating system's own trust store through ``truststore``
rather than certifi's copy of Mozilla's bundle: a company proxy that re-signs TLS does so
with a CA that IT installs into the system store, which certifi never sees.

Every request sends the key only to the configured platform: a ``next`` link to any
other origin is refused, and redirects are not followed. httpx's own log lines (URLs,
never headers) are kept to warnings so that ``--verbose`` shows nothing more of a
request than this module says.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..core.rescale import (
    ApiError,
    Instance,
    Job,
    ShapeError,
    auth_header,
    base_url_problem,
    parse_instances,
    parse_jobs,
    retry_after,
    worth_next_page,
)
from .rescale_credentials import Credentials

__all__ = ["MAX_BODY", "RescaleClient", "RescaleError", "ssl_context"]

log = logging.getLogger(__name__)
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

MAX_BODY = 8 << 20
"""A job list larger than this is not read (a runaway answer must not fill memory)."""
TIMEOUT = httpx.Timeout(20.0, connect=10.0)


class RescaleError(Exception):
    """A request that failed; ``error`` says how, for the poll policy."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error
        self.status: int | None = None


def ssl_context() -> ssl.SSLContext:
    """Verification by the operating system's trust store (truststore); the standard
    library's default store where truststore is missing."""
    try:
        import truststore
    except ImportError:
        return ssl.create_default_context()
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port)


class RescaleClient:
    """One platform, one key; an async client with a timeout on every request."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: httpx.Timeout | float = TIMEOUT,
        page_size: int = 50,
        max_pages: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = credentials.base.rstrip("/")
        why = base_url_problem(self.base)
        if why is not None:
            raise ValueError(f"{self.base}: {why}")
        self.page_size = page_size
        self.max_pages = max_pages
        self.requests = 0
        """Requests sent, for the budget and the benchmark."""
        self._client = httpx.AsyncClient(
            headers={
                "Authorization": auth_header(credentials.key),
                "Accept": "application/json",
                "User-Agent": f"jobtunnel/{__version__}",
            },
            timeout=timeout,
            verify=ssl_context(),
            trust_env=True,
            follow_redirects=False,
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RescaleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def jobs(self, *, every_page: bool = False) -> list[Job]:
        """The job list, following ``next`` (up to ``max_pages`` pages, one request each)
        while a page may hold running jobs, or always with ``every_page``."""
        url: str | None = f"{self.base}/api/v2/jobs/?page_size={self.page_size}"
        jobs: list[Job] = []
        for _ in range(self.max_pages):
            if url is None:
                break
            page = parse_jobs(await self._get(url))
            jobs += page.jobs
            more = every_page or worth_next_page(page)
            url = self._same_origin(page.next) if more else None
        return jobs

    async def instances(self, job_id: str) -> list[Instance]:
        """The nodes of ``job_id``'s cluster (first page: the master is listed first)."""
        data = await self._get(f"{self.base}/api/v2/jobs/{job_id}/instances/")
        nodes, _ = parse_instances(data)
        return nodes

    def _same_origin(self, url: str | None) -> str | None:
        if url is None:
            return None
        if _origin(url) != _origin(self.base):
            raise ShapeError(f"next: {url!r} points away from {self.base}; not followed")
        return url

    async def _get(self, url: str) -> object:
        self.requests += 1
        path = urlsplit(url).path
        try:
            async with self._client.stream("GET", url) as resp:
                _check_status(resp, path)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise _error("shape", f"{path}: answer larger than {MAX_BODY >> 20} MiB")
        except httpx.TimeoutException:
            raise _error("timeout", f"{path}: the Rescale API did not answer in time") from None
        except httpx.ConnectError as exc:
            raise _error("network", f"{path}: cannot reach {self.base}: {_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise _error("network", f"{path}: {type(exc).__name__}: {_reason(exc)}") from None
        try:
            return json.loads(bytes(body))
        except ValueError:
            raise _error("shape", f"{path}: the answer is not JSON") from None


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _error(kind: Any, message: str, after: float | None = None) -> RescaleError:
    return RescaleError(ApiError(kind, message, after))


def _check_status(resp: httpx.Response, path: str) -> None:
    code = resp.status_code
    if code < 300:
        return
    words = f"{code} {resp.reason_phrase}".strip()
    err: RescaleError
    if code in (401, 403):
        err = _error(
            "auth",
            f"{path}: the Rescale API refused the key ({words}); "
            "log in again: jobtunnel rescale login",
        )
    elif code == 429:
        after = retry_after(_header(resp.headers, "retry-after"), 60.0)
        err = _error("rate", f"{path}: rate limited ({words}); waiting {after:g} s", after)
    elif code >= 500:
        err = _error("server", f"{path}: the Rescale API failed ({words})")
    else:
        err = _error("client", f"{path}: {words}")
    err.status = code
    raise err


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name)
