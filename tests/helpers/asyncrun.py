"""Async test bodies with a hard time bound (no pytest-asyncio here)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from jobtunnel.daemon.engine.loop import event_loop_factory

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0, loop: str = "asyncio") -> T:
    """Run ``coro`` on a new loop ("asyncio" or "uvloop"), failing on anything the loop
    would only have logged."""

    errors: list[dict[str, Any]] = []

    async def bounded() -> T:
        # Errors the loop would only log (callbacks, unretrieved task exceptions) fail
        # the test instead of scrolling by.
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        async with asyncio.timeout(timeout):
            return await coro

    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        result = runner.run(bounded())
    assert not errors, [e.get("message") for e in errors]
    return result
