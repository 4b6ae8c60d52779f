"""The TUN boundary: the in-memory fake and the kernel device."""

from __future__ import annotations

import os
import select
import textwrap

import pytest

from client.tun import MemoryTun, enable_ipv6


def test_memory_tun_reads_injected_packets_in_order():
    """inject() queues packets that read() returns in order, then None."""
    tun = MemoryTun()
    tun.inject(b"one")
    tun.inject(b"two")
    assert tun.pending == 2
    assert [tun.read(), tun.read(), tun.read()] == [b"one", b"two", None]
    tun.close()


def test_memory_tun_fileno_is_readable_exactly_while_packets_wait():
    """The fd polls readable with packets queued and not readable once drained."""
    tun = MemoryTun()
    assert select.select([tun.fileno()], [], [], 0)[0] == []
    tun.inject(b"a")
    tun.inject(b"b")
    assert select.select([tun.fileno()], [], [], 0)[0] == [tun.fileno()]
    tun.read()
    assert select.select([tun.fileno()], [], [], 0)[0] == [tun.fileno()]
    tun.read()
    assert select.select([tun.fileno()], [], [], 0)[0] == []
    tun.close()


def test_memory_tun_records_writes_and_refuses_use_after_close():
    """write() appends to .written; after close() every call raises OSError."""
    tun = MemoryTun(name="t0")
    tun.write(b"\x45packet")
    assert tun.written == [b"\x45packet"] and tun.name == "t0"
    tun.close()
    tun.close()
    with pytest.raises(OSError):
        tun.read()
    with pytest.raises(OSError):
        tun.write(b"x")


KERNEL_ECHO = textwrap.dedent("""
    import select, struct, subprocess, sys
    from client.tun import KernelTun

    def checksum(data):
        if len(data) % 2:
            data += b"\\0"
        s = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF

    tun = KernelTun(mtu=65000)
    subprocess.run(["ip", "addr", "add", "10.250.0.1/24", "dev", tun.name], check=True)
    while tun.read() is not None:  # non-blocking: drains what the kernel sent (IPv6 chatter)
        pass
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"tunnelgate"
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 7, 0, 64, 1, 0,
                     bytes([10, 250, 0, 2]), bytes([10, 250, 0, 1]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    tun.write(ip + icmp)
    while True:
        if not select.select([tun], [], [], 3)[0]:
            sys.exit("no reply")
        packet = tun.read()
        if packet and packet[0] >> 4 == 4 and packet[9] == 1:
            break
    print(tun.name, packet[12:16].hex(), packet[16:20].hex(), packet[20], packet[-10:].decode())
    tun.close()
""")


@pytest.mark.lab
@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_kernel_tun_round_trips_a_ping_through_the_host_stack(lab):
    """An echo request written to a KernelTun comes back as the kernel's echo reply."""
    out = lab.run_python(lab.client, KERNEL_ECHO, timeout=30).stdout.split()
    name, src, dst, icmp_type, payload = out
    assert name.startswith("tg")
    assert (src, dst, icmp_type, payload) == ("0afa0001", "0afa0002", "0", "tunnelgate")


@pytest.mark.lab
@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_kernel_tun_is_up_with_the_mtu_and_vanishes_on_close(lab):
    """KernelTun comes up with the asked MTU and is gone from the namespace after close()."""
    source = textwrap.dedent("""
        import json, subprocess
        from client.tun import KernelTun
        tun = KernelTun(mtu=9000)
        link = json.loads(subprocess.run(["ip", "-j", "link", "show", tun.name],
                                         capture_output=True, check=True).stdout)[0]
        tun.close()
        gone = subprocess.run(["ip", "link", "show", tun.name], capture_output=True).returncode != 0
        print(link["mtu"], "UP" in link["flags"], gone)
    """)
    assert lab.run_python(lab.client, source).stdout.split() == ["9000", "True", "True"]


def _ipv6_conf(root, **disabled):
    """A stand-in for /proc/sys/net/ipv6/conf: ``name=flag`` gives each entry's disable_ipv6."""
    for name, flag in disabled.items():
        (root / name).mkdir(parents=True)
        (root / name / "disable_ipv6").write_text(f"{int(flag)}\n")
    return root


def test_enable_ipv6_clears_the_tuns_own_switch_when_the_host_has_ipv6(tmp_path):
    """A TUN born with IPv6 disabled (the default for new interfaces) gets it enabled when
    another interface has IPv6; nothing but the TUN's setting is written."""
    conf = _ipv6_conf(tmp_path, all=0, default=1, lo=0, eth0=0, tg0=1)
    assert enable_ipv6("tg0", conf)
    assert (conf / "tg0" / "disable_ipv6").read_text() == "0"
    assert [(conf / n / "disable_ipv6").read_text() for n in ("all", "default", "eth0")] == \
        ["0\n", "1\n", "0\n"]


@pytest.mark.parametrize("layout", [
    pytest.param(None, id="no-ipv6-stack"),
    pytest.param(dict(all=1, default=1, lo=1, eth0=1, tg0=1), id="all-disabled"),
    pytest.param(dict(all=0, default=1, lo=0, eth0=1, wlan0=1, tg0=1), id="disabled-but-loopback"),
])
def test_enable_ipv6_reports_a_host_without_ipv6_and_changes_nothing(tmp_path, layout):
    """No IPv6 stack, or IPv6 off for new interfaces and every one but loopback: False
    (nothing to leak), and the TUN's own setting is left as it is."""
    conf = _ipv6_conf(tmp_path / "conf", **layout) if layout else tmp_path / "missing"
    assert not enable_ipv6("tg0", conf)
    if layout:
        assert (conf / "tg0" / "disable_ipv6").read_text() == "1\n"


def test_enable_ipv6_on_a_device_without_ipv6_on_an_ipv6_host_raises(tmp_path):
    """A host with IPv6 but a TUN without it (an MTU below 1280) cannot block: OSError."""
    conf = _ipv6_conf(tmp_path, all=0, default=0, eth0=0)
    with pytest.raises(OSError, match="tg0 has no IPv6"):
        enable_ipv6("tg0", conf)


@pytest.mark.lab
@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_kernel_tun_comes_up_with_ipv6_quiet(lab):
    """KernelTun has no IPv6 address, accepts no router advertisements and sends nothing on
    its own (no router solicitation) in its first second and a half."""
    source = textwrap.dedent("""
        import json, select, subprocess
        from client.tun import KernelTun
        tun = KernelTun(mtu=1400)
        conf = f"/proc/sys/net/ipv6/conf/{tun.name}/"
        settings = [open(conf + key).read().strip() for key in ("addr_gen_mode", "accept_ra", "autoconf")]
        sent = len(select.select([tun], [], [], 1.5)[0])
        link = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", tun.name],
                                         capture_output=True, check=True).stdout)[0]
        print(*settings, sent, len(link["addr_info"]))
        tun.close()
    """)
    assert lab.run_python(lab.client, source).stdout.split() == ["1", "0", "0", "0", "0"]
