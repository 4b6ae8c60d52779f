"""DnsManager: the file backend on a lab namespace's resolver file, the resolved
backend against a fake resolvectl, and MemoryDns."""

from __future__ import annotations

import ipaddress
import json
import logging
import pathlib
import subprocess
import textwrap

import pytest

from client.dns import DnsManager, DnsState, MemoryDns, detect_backend, render_resolv_conf
from client.errors import HostSetupError
from tests.lab.netns import NETNS_ETC

# A resolver file with the awkward parts: a comment, a `domain` line, options,
# a byte that is not UTF-8, and no newline at the end.
ORIGINAL = b"# lab resolver\ndomain home.lan\nnameserver 127.0.0.1\noptions edns0 \xff\nnameserver 10.0.0.9"

# Prepended to every snippet run in the client namespace. The guard makes sure
# the file we are about to rewrite is the lab's bind mount, never the host's.
PRELUDE = textwrap.dedent("""
    import ipaddress, json, logging, os, pathlib, sys, time
    from client.dns import DnsManager, DnsState
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    if b"# lab resolver" not in pathlib.Path("/etc/resolv.conf").read_bytes():
        sys.exit("refusing: /etc/resolv.conf is not the lab's file")
    JOURNAL = pathlib.Path(sys.argv[1])
    STATE = DnsState(interface="tg-dns0", servers=("10.77.0.53", "10.77.0.54"), search=("corp.example",))
""")


def _resolver(lab) -> pathlib.Path:
    return NETNS_ETC / lab.client / "resolv.conf"


@pytest.fixture
def ns_resolver(lab):
    """The client namespace's resolver file holding ORIGINAL; put back in place afterwards."""
    path = _resolver(lab)
    before = path.read_bytes()
    with open(path, "r+b") as f:
        f.write(ORIGINAL)
        f.truncate()
    yield path
    with open(path, "r+b") as f:
        f.write(before)
        f.truncate()


def _client(lab, journal, body: str, **kw) -> subprocess.CompletedProcess:
    return lab.run_python(lab.client, PRELUDE + textwrap.dedent(body), str(journal), **kw)


def _seen(lab) -> bytes:
    """The resolver file as a process inside the client namespace sees it."""
    return lab.run(lab.client, ["cat", "/etc/resolv.conf"], text=False).stdout


@pytest.mark.lab
def test_file_apply_puts_servers_first_and_restore_is_byte_identical(lab, ns_resolver, tmp_path):
    """apply writes the pushed servers first and the domain into search; restore puts back every byte."""
    out = _client(lab, tmp_path / "dns.journal", """
        m = DnsManager(JOURNAL, backend="file")
        m.apply(STATE)
        print(json.dumps({"backend": m.backend, "journal": JOURNAL.exists()}), flush=True)
        sys.stdin.readline()
        m.restore()
        print(json.dumps({"journal": JOURNAL.exists()}))
    """, input="\n")
    first, second = map(json.loads, out.stdout.splitlines())
    assert first == {"backend": "file", "journal": True} and second == {"journal": False}
    assert _seen(lab) == ORIGINAL


@pytest.mark.lab
def test_file_apply_content(lab, ns_resolver, tmp_path):
    """While applied, the namespace sees our servers before its own and corp.example first in search."""
    proc = lab.popen_python(lab.client, PRELUDE + textwrap.dedent("""
        m = DnsManager(JOURNAL, backend="file")
        m.apply(STATE)
        print("applied", flush=True)
        sys.stdin.readline()
        m.restore()
    """), str(tmp_path / "dns.journal"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"applied\n"
        lines = _seen(lab).splitlines()
        servers = [line.split()[1] for line in lines if line.startswith(b"nameserver")]
        assert servers == [b"10.77.0.53", b"10.77.0.54", b"127.0.0.1", b"10.0.0.9"]
        assert b"search corp.example home.lan" in lines
        assert b"options edns0 \xff" in lines
    finally:
        proc.communicate(b"\n", timeout=10)
    assert _seen(lab) == ORIGINAL


@pytest.mark.lab
def test_file_apply_is_idempotent_and_follows_the_state(lab, ns_resolver, tmp_path):
    """Applying the same state twice changes nothing; a new state is rendered from the original."""
    out = _client(lab, tmp_path / "dns.journal", """
        m = DnsManager(JOURNAL, backend="file")
        path = pathlib.Path("/etc/resolv.conf")
        m.apply(STATE); once = path.read_bytes()
        m.apply(STATE); twice = path.read_bytes()
        m.apply(DnsState(interface="tg-dns0", servers=("10.77.0.55",), search=()))
        other = path.read_text(errors="replace")
        items = json.loads(JOURNAL.read_text())["items"]
        m.restore()
        print(json.dumps({"same": once == twice, "other": other, "items": len(items)}))
    """)
    result = json.loads(out.stdout)
    assert result["same"] and result["items"] == 1
    assert "10.77.0.53" not in result["other"] and "nameserver 10.77.0.55" in result["other"]
    assert "search home.lan" in result["other"] and "corp.example" not in result["other"]
    assert _seen(lab) == ORIGINAL


@pytest.mark.lab
def test_recover_after_kill_9_restores_the_original(lab, ns_resolver, tmp_path):
    """A process killed with SIGKILL after apply leaves a journal; recover() puts the file back."""
    journal = tmp_path / "dns.journal"
    proc = lab.popen_python(lab.client, PRELUDE + textwrap.dedent("""
        DnsManager(JOURNAL, backend="file").apply(STATE)
        print("applied", flush=True)
        time.sleep(600)
    """), str(journal), stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"applied\n"
    assert _seen(lab) != ORIGINAL
    busy = _client(lab, journal, "print(DnsManager.recover(JOURNAL))")
    assert busy.stdout.strip() == "False" and "belongs to running process" in busy.stderr
    proc.kill()
    proc.wait(timeout=10)
    out = _client(lab, journal, "print(DnsManager.recover(JOURNAL), DnsManager.recover(JOURNAL))")
    assert out.stdout.split() == ["True", "False"]
    assert _seen(lab) == ORIGINAL
    assert not journal.exists()


@pytest.mark.lab
def test_restore_leaves_a_file_someone_else_changed(lab, ns_resolver, tmp_path):
    """If the file no longer holds what we wrote, restore logs a WARNING and keeps their version."""
    theirs = b"# lab resolver, rewritten by a DHCP client\nnameserver 192.0.2.99\n"
    out = _client(lab, tmp_path / "dns.journal", f"""
        m = DnsManager(JOURNAL, backend="file")
        m.apply(STATE)
        with open("/etc/resolv.conf", "r+b") as f:
            f.write({theirs!r}); f.truncate()
        m.restore()
        print(JOURNAL.exists())
    """)
    assert out.stdout.strip() == "False"
    assert any(line.startswith("WARNING") and "changed by someone else" in line
               for line in out.stderr.splitlines())
    assert _seen(lab) == theirs


@pytest.mark.lab
def test_empty_state_changes_nothing(lab, ns_resolver, tmp_path):
    """A state with no servers and no domains writes no journal and leaves the file alone."""
    out = _client(lab, tmp_path / "dns.journal", """
        DnsManager(JOURNAL, backend="file").apply(DnsState(interface="tg-dns0"))
        print(JOURNAL.exists())
    """)
    assert out.stdout.strip() == "False"
    assert _seen(lab) == ORIGINAL


# -- resolved backend, against a fake resolvectl ---------------------------------

class FakeResolvectl:
    """Keeps per-link DNS settings the way resolved would, from resolvectl command lines."""

    def __init__(self) -> None:
        self.links: dict[str, dict[str, list[str]]] = {}
        """Link name -> {"dns": [...], "domain": [...]}, for links with settings."""
        self.fail: str | None = None
        """A verb ("dns", "revert", "status") to fail with exit status 1."""

    def __call__(self, argv: list[str]) -> None:
        assert argv[0] == "resolvectl"
        verb, args = argv[1], argv[2:]
        if verb == self.fail:
            raise subprocess.CalledProcessError(1, argv, "", f"Failed to {verb}: Access denied")
        if verb == "status":
            return
        if verb == "revert":
            self.links.pop(args[0], None)
        elif verb in ("dns", "domain"):
            values = [a for a in args[1:] if a]
            self.links.setdefault(args[0], {"dns": [], "domain": []})[verb] = values
        else:
            raise AssertionError(f"unexpected resolvectl {verb}")


STATE = DnsState(interface="lo", servers=("10.77.0.53", "10.77.0.54"), search=("corp.example", "lab.example"))
# "lo" exists everywhere, so a failed revert on it is a real failure, not "link gone".


def test_resolved_apply_sets_servers_and_routing_only_domains(tmp_path):
    """apply gives the link the pushed servers and ~domains (split DNS) and journals the link."""
    fake = FakeResolvectl()
    manager = DnsManager(tmp_path / "dns.journal", backend="resolved", run=fake)
    manager.apply(STATE)
    assert fake.links == {"lo": {"dns": ["10.77.0.53", "10.77.0.54"], "domain": ["~corp.example", "~lab.example"]}}
    assert json.loads((tmp_path / "dns.journal").read_text())["items"] == [{"kind": "resolved", "interface": "lo"}]
    manager.apply(STATE)
    assert fake.links["lo"]["dns"] == ["10.77.0.53", "10.77.0.54"]
    manager.restore()
    assert fake.links == {}
    assert not (tmp_path / "dns.journal").exists()


def test_resolved_new_interface_reverts_the_old_one(tmp_path):
    """When the TUN is replaced, the old link is reverted before the new one is set."""
    fake = FakeResolvectl()
    manager = DnsManager(tmp_path / "dns.journal", backend="resolved", run=fake)
    manager.apply(STATE)
    manager.apply(DnsState(interface="tg-new0", servers=("10.77.0.53",), search=("corp.example",)))
    assert fake.links == {"tg-new0": {"dns": ["10.77.0.53"], "domain": ["~corp.example"]}}


def test_resolved_recover_reverts_a_journaled_link(tmp_path):
    """recover() reverts the links a journal lists and removes the journal."""
    fake = FakeResolvectl()
    DnsManager(tmp_path / "dns.journal", backend="resolved", run=fake).apply(STATE)
    assert DnsManager.recover(tmp_path / "dns.journal", run=fake) is True
    assert fake.links == {} and not (tmp_path / "dns.journal").exists()


def test_resolved_revert_failure_is_logged_not_swallowed(tmp_path, caplog):
    """A failing revert is logged at WARNING with resolvectl's message, and restore carries on."""
    fake = FakeResolvectl()
    manager = DnsManager(tmp_path / "dns.journal", backend="resolved", run=fake)
    manager.apply(STATE)
    fake.fail = "revert"
    with caplog.at_level(logging.WARNING, logger="client.dns"):
        manager.restore()
    assert any(r.levelno == logging.WARNING and "Access denied" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "dns.journal").exists()


def test_resolved_apply_failure_raises_and_stays_undoable(tmp_path):
    """A failing resolvectl raises HostSetupError; the link is already journaled, so restore reverts it."""
    fake = FakeResolvectl()
    fake.fail = "dns"
    manager = DnsManager(tmp_path / "dns.journal", backend="resolved", run=fake)
    with pytest.raises(HostSetupError, match="Access denied"):
        manager.apply(STATE)
    assert (tmp_path / "dns.journal").exists()
    fake.fail = None
    manager.restore()
    assert not (tmp_path / "dns.journal").exists()


def test_detect_backend(tmp_path):
    """resolved is chosen when its signs are present and resolvectl works; the file otherwise."""
    stub = tmp_path / "stub.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    plain = tmp_path / "plain.conf"
    plain.write_text("nameserver 10.0.0.1\n")
    run_dir = tmp_path / "resolve"
    working, broken = FakeResolvectl(), FakeResolvectl()
    broken.fail = "status"
    assert detect_backend(stub, run=working, run_dir=run_dir) == "resolved"
    assert detect_backend(stub, run=broken, run_dir=run_dir) == "file"
    assert detect_backend(plain, run=working, run_dir=run_dir) == "file"
    run_dir.mkdir()
    assert detect_backend(plain, run=working, run_dir=run_dir) == "resolved"


@pytest.mark.lab
def test_detect_backend_picks_the_file_inside_a_lab_namespace(lab, tmp_path):
    """Even with every sign of resolved, a process in another netns gets the file backend."""
    stub = tmp_path / "stub.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    (tmp_path / "resolve").mkdir()
    source = ("import pathlib, sys\nfrom client.dns import detect_backend\n"
              "print(detect_backend(pathlib.Path(sys.argv[1]), run=lambda argv: None, run_dir=pathlib.Path(sys.argv[2])))")
    out = lab.run_python(lab.client, source, str(stub), str(tmp_path / "resolve"))
    assert out.stdout.strip() == "file"


# -- pure parts --------------------------------------------------------------------

def test_state_normalises_and_validates():
    """Domains lose "~", the trailing dot and case; servers become addresses; bad input is refused."""
    state = DnsState(interface="tun0", servers=("10.0.0.1",), search=("~Corp.Example.",))
    assert state.search == ("corp.example",) and state.servers == (ipaddress.IPv4Address("10.0.0.1"),)
    for bad in ({"search": ("bad domain",)}, {"search": ("-x.example",)}, {"servers": ("::1",)}):
        with pytest.raises(ValueError):
            DnsState(interface="tun0", **bad)


def test_render_merges_search_and_keeps_other_lines():
    """The rendered file lists pushed servers first, merges domain/search lines and keeps the rest."""
    state = DnsState(interface="tun0", servers=("10.77.0.53",), search=("corp.example",))
    text = render_resolv_conf("search a.example\nnameserver 10.77.0.53\noptions ndots:2\ndomain b.example\n", state)
    lines = text.splitlines()
    assert lines[1:] == ["nameserver 10.77.0.53", "search corp.example a.example b.example", "options ndots:2"]
    assert render_resolv_conf(text, state).count("nameserver 10.77.0.53") == 1


def test_memory_dns_records_states():
    """MemoryDns keeps the applied state until restore, and treats an empty state as none."""
    fake = MemoryDns()
    fake.apply(STATE)
    assert fake.state == STATE
    fake.apply(DnsState(interface="lo"))
    assert fake.state is None and len(fake.applied) == 2
    fake.restore()
    assert fake.restore_count == 1 and fake.backend == "memory"
