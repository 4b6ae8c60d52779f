"""Dispatcher: the requests of control peers, run against one EngineHost.

Theory of operation. ``read_loop`` parses a peer's bytes with the sans-IO
``protocol`` module and runs each request as a task, a few at a time per
peer (``CALLS_IN_FLIGHT``), so a long ``disconnect`` does not block a
``status``. The peer must say ``hello`` with a supported API version before
anything else. Every request gets exactly one answer: a result, or an error
whose code follows from the exception (``Busy``, ``NoSuchQuestion``, a bad
parameter, any other ``ClientError``; anything else is logged as an internal
error). After ``subscribe`` the peer also gets ``stats`` every
``stats_interval`` seconds while the engine is connected.
"""

from __future__ import annotations

import asyncio
import logging

from client.control import protocol as p
from client.control.errors import Busy, NoSuchQuestion
from client.control.host import SERVICE_VERSION, EngineHost
from client.control.params import ConnectParams, decision, stats_interval, string
from client.control.peers import Peer
from client.errors import ClientError, UsageError
from client.states import State

log = logging.getLogger(__name__)


class Dispatcher:
    """Reads, runs and answers the requests of peers of one EngineHost."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host

    async def read_loop(self, peer: Peer) -> None:
        buffer = p.LineBuffer()
        while not peer.dropped:
            try:
                data = await peer.reader.read(65536)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            try:
                lines = buffer.feed(data)
            except p.ProtocolError as exc:  # an over-long line: answer, then close
                peer.send(p.ErrorResponse(id=None, code=exc.code, message=exc.message))
                return
            for line in lines:
                if not line.strip():
                    continue
                try:
                    message = p.parse(line)
                except p.ProtocolError as exc:
                    peer.send(p.ErrorResponse(id=exc.id, code=exc.code, message=exc.message))
                    continue
                if not isinstance(message, p.Request):
                    continue  # notifications and answers from a client mean nothing here
                await peer.calls.acquire()
                task = asyncio.ensure_future(self._call(peer, message))
                peer.tasks.add(task)
                task.add_done_callback(peer.tasks.discard)

    async def _call(self, peer: Peer, request: p.Request) -> None:
        try:
            result = await self._dispatch(peer, request)
        except p.ProtocolError as exc:
            peer.send(p.ErrorResponse(id=request.id, code=exc.code, message=exc.message))
        except Busy as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.BUSY, message=str(exc)))
        except NoSuchQuestion as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.NO_SUCH_QUESTION, message=str(exc)))
        except UsageError as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.INVALID_PARAMS, message=str(exc)))
        except ClientError as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.SERVICE_ERROR, message=str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("control call %s failed", request.method)
            peer.send(p.ErrorResponse(id=request.id, code=p.SERVICE_ERROR,
                                      message=f"internal error in {request.method} (see the service log)"))
        else:
            peer.send(p.Response(id=request.id, result=result))
        finally:
            peer.calls.release()

    async def _dispatch(self, peer: Peer, request: p.Request) -> object:
        method, params = request.method, request.params
        if method == "hello":
            api = params.get("api")
            if api != p.API_VERSION or isinstance(api, bool):
                raise p.ProtocolError(p.UNSUPPORTED_VERSION,
                                      f"unsupported API version {api!r}; this service supports: "
                                      f"{p.API_VERSION}")
            peer.greeted = True
            log.debug("control client %s: %s", peer.name, str(params.get("client", ""))[:100])
            return {"api": p.API_VERSION, "service": SERVICE_VERSION}
        if not peer.greeted:
            raise p.ProtocolError(p.INVALID_REQUEST, "the first call must be hello")
        if method == "status":
            return self.host.status()
        if method == "connect":
            call = ConnectParams.read(params)
            await self.host.connect(call.gateway, call.username, call.password, ca_pem=call.ca_pem,
                                    pin=call.pin, profile=call.profile, owner=peer.uid,
                                    reconnect_for=call.reconnect_for)
            return {}
        if method == "disconnect":
            await self.host.disconnect()
            return {}
        if method == "subscribe":
            interval = stats_interval(params)
            peer.subscribed = True
            if peer.stats_task is not None:
                peer.stats_task.cancel()
            peer.stats_task = asyncio.ensure_future(self._send_stats(peer, interval))
            return {}
        if method == "answer_challenge":
            self.host.answer("challenge", string(params, "id"), string(params, "response"), uid=peer.uid)
            return {}
        if method == "answer_certificate":
            self.host.answer("certificate", string(params, "id"), decision(params), uid=peer.uid)
            return {}
        raise p.ProtocolError(p.METHOD_NOT_FOUND, f"no method {method!r}")

    async def _send_stats(self, peer: Peer, interval: float) -> None:
        while not peer.dropped:
            await asyncio.sleep(interval)
            if self.host.state is State.CONNECTED:
                peer.send(p.Notification(method="stats", params=self.host.stats()))
