"""Two ways the engine waits: for a blocking call off the event loop, and for a
step that a stop request must be able to cut short."""

from __future__ import annotations

import asyncio
import threading
import typing

__all__ = ["off_loop", "unless_stopped"]


def off_loop(fn: typing.Callable, *args: object) -> object:
    """Run a short blocking call in a thread of its own and wait for it.

    pyroute2 drives an event loop of its own inside its synchronous API, which
    cannot run inside ours; a plain thread has no running loop.
    """
    result: list[object] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="host-changes")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0] if result else None


async def unless_stopped(coro: typing.Coroutine, stop: asyncio.Event) -> asyncio.Future | None:
    """Run ``coro`` until it is done, or cancel it as soon as ``stop`` is set.

    Returns its finished task (``result()`` gives its outcome), or None when it was
    stopped first: Ctrl-C or a disconnect must not wait out a login, keepalive or
    resume timeout. The coroutine closes what it opened when it is cancelled.
    """
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    return None if task.cancelled() else task
