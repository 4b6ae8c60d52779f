"""What the engine is told: which gateway, how to trust it, who logs in, and how to
behave when the session is lost."""

from __future__ import annotations

import dataclasses
import ipaddress

from client.bpf.offload import offload_enabled
from client.resume_pacing import RECONNECT_FOR, reconnect_delays
from client.gateway_address import GatewayAddress
from client.trust import Trust

#: Private link network of the TUN used for TCP reflection: the TUN's own
#: address (where the listener is bound) and one unassigned neighbour.
REFLECT_NETWORK = ipaddress.IPv4Network("198.18.255.252/30")


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How to connect."""

    gateway: GatewayAddress
    """The gateway."""
    trust: Trust
    """How to trust its certificate."""
    username: str
    """Login name."""
    reflect_network: ipaddress.IPv4Network = REFLECT_NETWORK
    """The TUN's reflection link network (a /30 or larger)."""
    dead_peer_timeout: float = 10.0
    """A PING unanswered this long ends the session."""
    reconnect_delays: tuple[float, ...] = reconnect_delays(RECONNECT_FOR)
    """Pauses before each attempt to resume a lost session (empty: never); a change of the
    network under the tunnel cuts the current pause short."""
    tcp_fast_path: bool = dataclasses.field(default_factory=offload_enabled)
    """Rewrite established TCP flows in the kernel (eBPF on the TUN) instead of in Python.
    Defaults to on unless ``$TUNNELGATE_BPF=0``; falls back to Python where BPF is unavailable."""
