"""Changing the MTU of a TUN that is up: the kernel device (lab) and the fake."""

from __future__ import annotations

import os
import textwrap

import pytest

from client.tun import MemoryTun


def test_memory_tun_shows_the_mtu_it_was_given_and_refuses_one_out_of_range():
    """set_mtu() changes the fake's mtu; a value a TUN cannot have is a ValueError."""
    tun = MemoryTun(mtu=65000)
    tun.set_mtu(1400)
    assert tun.mtu == 1400
    with pytest.raises(ValueError):
        tun.set_mtu(70000)
    assert tun.mtu == 1400
    tun.close()


@pytest.mark.lab
@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_kernel_tun_takes_a_new_mtu_while_up(lab):
    """KernelTun.set_mtu() changes the MTU of the device the kernel shows, and it stays up."""
    source = textwrap.dedent("""
        import json, subprocess
        from client.tun import KernelTun
        tun = KernelTun(mtu=65000)
        tun.set_mtu(1400)
        link = json.loads(subprocess.run(["ip", "-j", "link", "show", tun.name],
                                         capture_output=True, check=True).stdout)[0]
        print(link["mtu"], "UP" in link["flags"], tun.mtu)
        tun.close()
    """)
    assert lab.run_python(lab.client, source).stdout.split() == ["1400", "True", "1400"]
