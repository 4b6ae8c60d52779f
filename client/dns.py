"""Split DNS for the tunnel: declarative, journaled, reversible.

Theory of operation. The engine turns the pushed DNS config into a `DnsState`
and calls `apply(state)`; `restore()` puts the host back. Like `routes`, every
change is written to a journal (`client.journal`, fsynced) *before* it is
made, and `DnsManager.recover(path)` at the next start undoes whatever a dead
owner's journal lists. This module decides what to apply and what to undo;
`client.resolver` does the talking to systemd-resolved and the resolver file.

Two backends, chosen once when the manager is built (`backend`, see
`detect_backend`):

"resolved"  The pushed servers go on the TUN link and the domains become
            routing-only domains, so only names under those domains are sent
            to the tunnel's servers: true split DNS. The journal item only
            names the interface; undo reverts the link.

"file"      The resolver file is rewritten (`render_resolv_conf`) so that the
            pushed servers come first and the domains are added to `search`.
            The journal holds the whole original text and the text we wrote;
            restore writes the original back byte for byte, but only if the
            file still holds exactly what we wrote: if someone else (a DHCP
            client, the user) changed it meanwhile, their version is left
            alone and a warning is logged. This backend cannot do true split
            DNS: the resolver asks the pushed servers first for every name,
            and glibc uses only the first three `nameserver` lines. That is
            the accepted fallback.

An empty state (no servers, no domains) means "leave DNS alone": applying it
changes nothing, or undoes what an earlier apply did. `MemoryDns` is the fake
for engine tests.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import pathlib
import re
import subprocess
import typing

from client import resolver
from client.errors import HostSetupError
from client.journal import Journal
from client.resolver import RESOLV_CONF, Runner, detect_backend, run_command

__all__ = ["DnsState", "HostDns", "DnsManager", "MemoryDns", "Runner", "detect_backend", "render_resolv_conf"]

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclasses.dataclass(frozen=True)
class DnsState:
    """The DNS the host should use while the tunnel is up."""

    interface: str
    """Name of the TUN device."""
    servers: tuple[ipaddress.IPv4Address, ...] = ()
    """Pushed DNS servers, in order of preference."""
    search: tuple[str, ...] = ()
    """Split domains ("corp.example"), without a leading "~" or trailing dot."""

    def __post_init__(self) -> None:
        if not self.interface or len(self.interface) > 15 or "/" in self.interface:
            raise ValueError(f"bad interface name {self.interface!r}")
        object.__setattr__(self, "servers", tuple(ipaddress.IPv4Address(s) for s in self.servers))
        object.__setattr__(self, "search", tuple(_domain(d) for d in self.search))

    @property
    def empty(self) -> bool:
        """True when there is nothing to configure."""
        return not self.servers and not self.search


def _domain(name: str) -> str:
    clean = str(name).strip().lstrip("~").rstrip(".").lower()
    if not clean or len(clean) > 253 or not all(_LABEL.match(label) for label in clean.split(".")):
        raise ValueError(f"bad DNS domain {name!r}")
    return clean


class HostDns(typing.Protocol):
    """The boundary the engine uses; `DnsManager` and `MemoryDns` fit it."""

    backend: str

    def apply(self, state: DnsState) -> None: ...

    def restore(self) -> None: ...


def render_resolv_conf(original: str, state: DnsState) -> str:
    """The resolver file with the pushed servers first and the domains first in `search`.

    Other lines (options, comments, the original servers) stay in their order;
    every `search`/`domain` line collapses into one `search` line in the place
    of the first.
    """
    pushed = [str(s) for s in state.servers]
    lines = [f"# tunnelgate: DNS for {state.interface}; the original is put back on disconnect"]
    lines += [f"nameserver {s}" for s in pushed]
    old_domains: list[str] = []
    body: list[str | None] = []  # None marks where the search line goes
    for line in original.splitlines():
        words = line.split()
        if words[:1] in (["search"], ["domain"]):
            old_domains += words[1:]
            if None not in body:
                body.append(None)
        elif words[:1] == ["nameserver"] and words[1:2] and words[1] in pushed:
            continue  # already listed first
        else:
            body.append(line)
    domains = list(dict.fromkeys([*state.search, *(d.rstrip(".").lower() for d in old_domains)]))
    search = f"search {' '.join(domains)}" if domains else None
    if None not in body and search:
        lines.append(search)
    lines += [search if line is None else line for line in body if line is not None or search]
    return "\n".join(lines) + "\n"

class DnsManager:
    """Applies a `DnsState` through systemd-resolved or the resolver file, and undoes it."""

    def __init__(self, journal_path: pathlib.Path, *, resolv_conf: pathlib.Path = RESOLV_CONF,
                 backend: str = "auto", run: Runner | None = None) -> None:
        if backend not in ("auto", "resolved", "file"):
            raise ValueError(f"unknown DNS backend {backend!r}")
        self._journal = Journal(journal_path, what="DNS")
        self._resolv_conf = pathlib.Path(resolv_conf)
        self._run = run or run_command
        self.backend = detect_backend(self._resolv_conf, run=self._run) if backend == "auto" else backend
        """The backend in use: "resolved" or "file"."""
        self._items: list[dict] = []
        self._state: DnsState | None = None

    @property
    def journal_path(self) -> pathlib.Path:
        return self._journal.path

    def apply(self, state: DnsState) -> None:
        """Make the host's DNS match `state`; idempotent. Raises HostSetupError."""
        if not self._items and self._journal.exists():
            self._adopt_journal()
        if state.empty:
            if self._items:
                self.restore()
            return
        if state == self._state and self._still_ours():
            return
        try:
            if self.backend == "resolved":
                self._apply_resolved(state)
            else:
                self._apply_file(state)
        except subprocess.CalledProcessError as exc:
            raise HostSetupError(f"{' '.join(exc.cmd)} failed: {(exc.stderr or '').strip()}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise HostSetupError(f"cannot configure DNS: {exc}") from None
        self._state = state

    def restore(self) -> None:
        """Undo everything this manager applied, newest first; failures are logged at WARNING."""
        if not self._items:
            if self._journal.exists() and self._journal.owned_by_us():
                self._items = self._journal.read()["items"]
            else:
                return
        _undo_all(self._items, self._journal, self._run)
        self._items = []
        self._state = None

    @staticmethod
    def recover(journal_path: pathlib.Path, *, run: Runner | None = None) -> bool:
        """Undo a journal left by a dead process; True if there was one to undo."""
        journal = Journal(journal_path, what="DNS")
        items = journal.orphaned()
        if items is None:
            return False
        _undo_all(items, journal, run or run_command)
        return True

    # -- internals ---------------------------------------------------------

    def _adopt_journal(self) -> None:
        if self._journal.owned_by_us():
            self._items = self._journal.read()["items"]
        elif not DnsManager.recover(self._journal.path, run=self._run):
            raise HostSetupError(f"DNS journal {self._journal.path} is in use by another process")
        else:
            log.warning("undid DNS changes left by a previous run before applying")

    def _still_ours(self) -> bool:
        """Whether what we applied is still in place, as far as we can see."""
        for item in self._items:
            if item["kind"] != "file":
                continue
            if resolver.read_bytes(pathlib.Path(item["path"])) != resolver.encode(item["written"]):
                return False
        return bool(self._items)

    def _record(self, item: dict) -> None:
        self._journal.write([*self._items, item])
        self._items.append(item)

    def _apply_resolved(self, state: DnsState) -> None:
        for item in list(self._items):
            if item["kind"] != "resolved" or item["interface"] != state.interface:  # the TUN was replaced
                _undo(item, self._run)
                self._items.remove(item)
                self._journal.write(self._items)
        if not self._items:
            self._record({"kind": "resolved", "interface": state.interface})
        resolver.set_link(self._run, state.interface, state.servers, state.search)
        log.info("DNS for %s via systemd-resolved: servers %s, domains %s", state.interface,
                 ", ".join(map(str, state.servers)) or "-", ", ".join(state.search) or "-")

    def _apply_file(self, state: DnsState) -> None:
        path = self._resolv_conf
        current = resolver.read_bytes(path)
        item = next((i for i in self._items if i["kind"] == "file"), None)
        if item is not None and current != resolver.encode(item["written"]):
            log.warning("%s was changed by someone else while the tunnel was up; applying on top of it", path)
            self._items.remove(item)
            item = None
        if item is None:
            original = None if current is None else resolver.decode(current)
            item = {"kind": "file", "path": str(path), "original": original, "written": None}
        else:
            original = item["original"]
        written = render_resolv_conf(original or "", state)
        if resolver.encode(written) == current:
            return
        item = {**item, "written": written, "replacing": item["written"]}  # see _ours()
        items = [i for i in self._items if i["kind"] != "file"] + [item]
        self._journal.write(items)  # write down first, then change
        self._items = items
        resolver.write_in_place(path, resolver.encode(written))
        log.info("DNS for %s in %s: servers %s, search %s", state.interface, path,
                 ", ".join(map(str, state.servers)) or "-", ", ".join(state.search) or "-")


def _undo(item: dict, run: Runner) -> None:
    """Undo one journal item; raises on failure, returns quietly if nothing is left to undo."""
    if item["kind"] == "resolved":
        resolver.revert_link(run, item["interface"])
        return
    path = pathlib.Path(item["path"])
    current, original = resolver.read_bytes(path), item["original"]
    before = b"" if original is None else resolver.encode(original)
    if current == (None if original is None else before):
        log.info("%s already holds its original content", path)  # died before writing
    elif item["written"] is not None and current is not None and _ours(current, before, item):
        if original is None:
            path.unlink()
        else:
            resolver.write_in_place(path, before)
        log.info("restored the original %s", path)
    else:
        log.warning("%s was changed by someone else since tunnelgate wrote it; leaving their version", path)


def _ours(current: bytes, original: bytes, item: dict) -> bool:
    """Whether the file holds what we wrote, or what a crash left while we were
    writing it (over the original or over our previous version) or putting the
    original back over it."""
    written = resolver.encode(item["written"])
    under = resolver.encode(item["replacing"]) if item.get("replacing") is not None else original
    return resolver.cut_short(current, under, written) or resolver.cut_short(current, written, original)


def _undo_all(items: list[dict], journal: Journal, run: Runner) -> None:
    """Undo items newest first; log each failure at WARNING and carry on."""

    def undo_one(item: dict) -> None:
        try:
            _undo(item, run)
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.strip() if isinstance(exc.stderr, str) else ""
            raise OSError(detail or str(exc)) from None

    journal.undo(items, undo_one, _describe)


def _describe(item: dict) -> str:
    return f"on {item['interface']}" if item["kind"] == "resolved" else f"in {item['path']}"


class MemoryDns:
    """In-memory stand-in for `DnsManager`: records what the engine asked for."""

    backend = "memory"

    def __init__(self, journal_path: pathlib.Path | None = None, **_: object) -> None:
        self.state: DnsState | None = None
        """The state currently applied, None when restored (or never applied)."""
        self.applied: list[DnsState] = []
        """Every state passed to apply(), in order."""
        self.restore_count = 0
        """How many times restore() was called."""
        self.fail_with: Exception | None = None
        """Set to make the next apply() raise this."""

    def apply(self, state: DnsState) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        self.applied.append(state)
        self.state = None if state.empty else state

    def restore(self) -> None:
        self.state = None
        self.restore_count += 1

    @staticmethod
    def recover(journal_path: pathlib.Path, **_: object) -> bool:
        return False
