"""The engine with a full tunnel blocks IPv6 and with a split tunnel leaves it alone: the
real engine against the real gateway over loopback, with an in-memory TUN and routes."""

from __future__ import annotations

import asyncio
import ipaddress

from client.host_setup import is_full_tunnel
from tests.client.engine_rig import Rig, run
from tests.client.test_ipv6_block import APP, SERVER, icmpv6_ok, syn6


def test_a_full_tunnel_refuses_ipv6_at_the_tun_with_an_icmpv6_error(tmp_path, monkeypatch):
    """With 0.0.0.0/0 pushed (and something excluded) the host state blocks IPv6, and an
    IPv6 SYN read from the TUN is answered with "administratively prohibited" at once."""
    async def main():
        rig = Rig(tmp_path)
        rig.push(monkeypatch, include=["0.0.0.0/0"], exclude=["127.0.0.1/32"])
        await rig.start()
        await rig.connected()
        assert rig.routes.state.block_ipv6
        rig.tun.inject(syn6())
        reply = await rig.written(lambda p: p[0] >> 4 == 6)
        assert (reply[40], reply[41], reply[48:]) == (1, 1, syn6()) and icmpv6_ok(reply)
        assert ipaddress.IPv6Address(reply[24:40]) == ipaddress.IPv6Address(APP)
        assert ipaddress.IPv6Address(reply[8:24]) == ipaddress.IPv6Address(SERVER)
        assert rig.engine.stats.ipv6_refused == 1
        await rig.close()
    run(main())


def test_a_split_tunnel_leaves_ipv6_alone(tmp_path):
    """Without 0.0.0.0/0 the host state does not block IPv6 and an IPv6 packet that reaches
    the TUN anyway (link-local chatter, say) is dropped without an answer."""
    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        assert not rig.routes.state.block_ipv6
        rig.tun.inject(syn6())
        for _ in range(10):
            await asyncio.sleep(0.02)
        assert rig.tun.pending == 0 and not [p for p in rig.tun.written if p[0] >> 4 == 6]
        assert rig.engine.stats.ipv6_refused == 0
        await rig.close()
    run(main())


def test_only_a_network_of_prefix_length_zero_makes_a_full_tunnel():
    """0.0.0.0/0 among the pushed networks is a full tunnel; halves or large networks are not."""
    net = ipaddress.IPv4Network
    assert is_full_tunnel([net("10.0.0.0/8"), net("0.0.0.0/0")])
    assert not is_full_tunnel([net("0.0.0.0/1"), net("128.0.0.0/1")])
    assert not is_full_tunnel([])
