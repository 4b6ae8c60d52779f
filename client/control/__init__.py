"""The control API: the service that hosts the engine, and its clients.

Public API: ``ControlClient`` (Qt-free asyncio client), ``ControlServer``
and ``EngineHost`` (the service side), the error types, and the sans-IO
``protocol`` module.
"""

from client.control.client import DEFAULT_SOCKET, ControlClient, socket_path
from client.control.errors import ControlError, NotAllowed, ServiceUnavailable

__all__ = ["ControlClient", "ControlError", "NotAllowed", "ServiceUnavailable", "DEFAULT_SOCKET",
           "socket_path", "ControlServer", "EngineHost"]


def __getattr__(name: str):
    # The service side pulls in the engine; a GUI that only talks to the
    # service should not have to import it.
    if name == "ControlServer":
        from client.control.server import ControlServer
        return ControlServer
    if name == "EngineHost":
        from client.control.host import EngineHost
        return EngineHost
    raise AttributeError(name)
