"""Telling the engine at once that the network under the tunnel changed.

Theory of operation. `NetWatcher.open(gateway)` opens a monitor socket (an
rtnetlink socket subscribed to link, address and route changes), looks the
route to the gateway up once as the baseline, reads the clocks once, and starts
one task. A reader callback drains the monitor and tells the sans-IO
`ChangeDetector` (``client.netchange``) an event happened; the task wakes when
the detector wants a route lookup (debounced) or every ``tick`` seconds to read
the clocks, and keeps the reasons the detector returns until `changed()` hands
them out. `close()` removes the reader, closes the socket and stops the task.

The watcher never raises into the engine: if the monitor cannot be opened or
read, or a lookup fails, it logs one warning and goes on noticing sleep only.

The host is behind `NetworkHost` (``client.nethost``): `LinuxNetwork` is the
real one, `MemoryNetwork` the fake for tests. The monitor is a plain non-blocking socket read with
``loop.add_reader`` rather than pyroute2's ``AsyncIPRoute``, because the engine
runs on uvloop and uvloop refuses netlink sockets in ``create_datagram_endpoint``
(pyroute2 0.9.7); lookups use pyroute2's synchronous ``IPRoute`` in a worker
thread, where it can run its own event loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from client.netchange import ChangeDetector, IPAddress
from client.nethost import LinuxNetwork, NetworkHost

__all__ = ["ChangeFeed", "NetWatcher"]

log = logging.getLogger(__name__)

#: Datagrams read per reader callback; the rest wait for the loop's next turn.
_DRAIN_LIMIT = 256


class NetWatcher:
    """Waits for the network under the tunnel to change; see the module docstring."""

    def __init__(self, detector: ChangeDetector, host: NetworkHost, tick: float) -> None:
        """Use `open()`."""
        self._detector = detector
        self._host = host
        self._tick = tick
        self._monitor: socket.socket | None = None
        self._reasons: list[str] = []
        self._fired = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gave_up = False
        self._closed = False

    @classmethod
    async def open(cls, gateway: IPAddress | str, *, host: NetworkHost | None = None,
                   tick: float = 2.0, debounce: float = 0.5, max_delay: float = 2.0,
                   sleep_threshold: float = 3.0) -> NetWatcher:
        """Start watching the route to ``gateway`` (taking it as it is now for the
        baseline) and the clocks. Never fails for the host's sake (see `watching_routes`);
        raises ValueError for a bad address or timing."""
        if not tick > 0:
            raise ValueError(f"tick must be positive, got {tick}")
        detector = ChangeDetector(gateway, debounce=debounce, max_delay=max_delay,
                                  sleep_threshold=sleep_threshold)
        self = cls(detector, host if host is not None else LinuxNetwork(), tick)
        self._loop = asyncio.get_running_loop()
        try:
            self._monitor = self._host.open_monitor()
            self._loop.add_reader(self._monitor.fileno(), self._on_readable)
        except Exception as exc:  # OSError mostly; whatever it is, the engine must go on
            self._give_up_routes(f"cannot open an rtnetlink socket: {exc}")
        try:
            if self._monitor is not None:  # opened first: a change during the lookup is not lost
                await self._look_up()
        except BaseException:  # cancelled: nobody will ever close() what we opened
            self.close()
            raise
        self._detector.clocks_read(self._host.clocks())
        self._task = asyncio.create_task(self._run(), name="netwatch")
        return self

    @property
    def target(self) -> IPAddress:
        """The address whose route is watched."""
        return self._detector.target

    @property
    def watching_routes(self) -> bool:
        """False once the route watch failed (then only sleep is noticed) or after close()."""
        return self._monitor is not None

    async def changed(self) -> str:
        """Wait for the next change and return why (the reasons since the last call,
        joined). Never raises but CancelledError; waits for ever after close()."""
        while not self._reasons:
            self._fired.clear()
            await self._fired.wait()
        reasons, self._reasons = self._reasons, []
        return "; ".join(dict.fromkeys(reasons))

    def close(self) -> None:
        """Release the monitor socket and stop; idempotent."""
        self._closed = True
        self._close_monitor()
        if self._task is not None:
            self._task.cancel()

    # -- inside ------------------------------------------------------------------

    def _fire(self, reason: str | None) -> None:
        if reason is not None and not self._closed:
            log.info("%s", reason)
            self._reasons.append(reason)
            self._fired.set()

    def _on_readable(self) -> None:
        try:
            for _ in range(_DRAIN_LIMIT):
                try:
                    self._monitor.recv(65536)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:  # ENOBUFS: events were lost; a lookup covers them
                        raise
        except BlockingIOError:
            pass
        except OSError as exc:
            self._give_up_routes(f"cannot read the rtnetlink socket: {exc}")
            return
        self._detector.netlink_event(self._loop.time())
        self._wake.set()

    async def _look_up(self) -> None:
        try:
            route = await asyncio.to_thread(self._host.lookup_route, self.target)
        except Exception as exc:  # whatever the host failed with, the engine must go on
            self._give_up_routes(f"cannot look up the route to {self.target}: {exc}")
            return
        if self._monitor is not None:
            self._fire(self._detector.route_seen(route))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick
        try:
            while True:
                self._wake.clear()
                lookup_at = self._detector.lookup_at
                wake_at = next_tick if lookup_at is None else min(next_tick, lookup_at)
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - loop.time()))
                except asyncio.TimeoutError:
                    pass
                now = loop.time()
                if now >= next_tick:
                    next_tick = now + self._tick
                    self._fire(self._detector.clocks_read(self._host.clocks()))
                if self._detector.lookup_due(now) and self._monitor is not None:
                    await self._look_up()
        except Exception as exc:  # a bug here must not take the engine down with it
            log.warning("the network watcher stopped: %r", exc)

    def _give_up_routes(self, why: str) -> None:
        if self._gave_up or self._closed:
            return
        self._gave_up = True
        log.warning("%s; watching for sleep only (other network changes wait for the "
                    "keepalive)", why)
        self._close_monitor()

    def _close_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        try:
            self._loop.remove_reader(monitor.fileno())
        except Exception as exc:  # a closed loop: nothing can read the socket any more
            log.debug("cannot remove the netlink reader: %r", exc)
        monitor.close()


class ChangeFeed:
    """A watcher's next change as a future, renewed each time one is taken: what the
    engine waits on beside its link, and what cuts a pause between resume attempts."""

    def __init__(self, watcher: NetWatcher | None) -> None:
        self._watcher = watcher
        self.next: asyncio.Future = self._wait_next()
        """Done with the reason when the network under the tunnel changed."""

    def _wait_next(self) -> asyncio.Future:
        return asyncio.ensure_future(self._watcher.changed()) if self._watcher else asyncio.Future()

    def take(self) -> str:
        """Why the network changed; starts waiting for the next change."""
        reason, self.next = self.next.result(), self._wait_next()
        return reason

    async def pause(self, delay: float, stop: asyncio.Event) -> bool:
        """Wait up to ``delay`` seconds, less if ``stop`` is set or the network changes
        first; True for a change (not yet taken)."""
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stopper, self.next}, timeout=delay,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        return self.next.done()

    def close(self) -> None:
        self.next.cancel()
        if self._watcher is not None:
            self._watcher.close()
