"""Where the gateway listens, parsed from what the user types.

``GatewayAddress.parse`` takes ``https://HOST[:PORT]`` (or a bare ``HOST[:PORT]``)
and refuses anything else with a ``UsageError`` naming the URL. The CLI, the
profiles and the control API all parse gateways with it.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

from client.errors import UsageError

_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?)+$|^\[?[0-9a-f:.]+\]?$",
                   re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class GatewayAddress:
    """Where the gateway listens."""

    host: str
    """Host name or IP literal."""
    port: int
    """TCP port (443 by default)."""

    @classmethod
    def parse(cls, url: str) -> "GatewayAddress":
        """Parse ``https://HOST[:PORT]`` (a bare ``HOST[:PORT]`` is accepted too)."""
        if "://" not in url:
            url = "https://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https":
            raise UsageError(f"gateway URL {url!r} must start with https://")
        try:
            port = parts.port or 443
        except ValueError:
            raise UsageError(f"gateway URL {url!r} has an invalid port") from None
        if not parts.hostname or not _HOST.match(parts.hostname):
            raise UsageError(f"gateway URL {url!r} has no valid host name or address")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise UsageError(f"gateway URL {url!r} must be just https://HOST[:PORT]")
        return cls(host=parts.hostname, port=port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
