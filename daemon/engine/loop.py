"""Which asyncio event loop the daemon runs on: uvloop where installed, else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["event_loop_factory", "install_event_loop"]


def event_loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop factory for ``asyncio.Runner(loop_factory=...)`` (3.11+; also
    ``asyncio.run(..., loop_factory=...)`` from 3.12).

    ``choice`` is "auto" (uvloop when installed), "uvloop" (required) or "asyncio".
    """
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event loop {choice!r}: use auto, uvloop or asyncio")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def install_event_loop(choice: str = "auto") -> str:
    """Make ``asyncio.run`` use the chosen loop; returns "uvloop" or "asyncio"."""
    factory = event_loop_factory(choice)
    if factory is asyncio.new_event_loop:
        asyncio.set_event_loop_policy(None)
        return "asyncio"
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
