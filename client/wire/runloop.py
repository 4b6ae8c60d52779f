"""Running a coroutine on the fastest event loop available."""

from __future__ import annotations

import asyncio
import typing


def run_loop(coro: typing.Coroutine) -> object:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)
    return uvloop.run(coro)
