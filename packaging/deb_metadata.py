"""What the package says about itself: its Debian version, the relations and
description of its control file, its changelog and its copyright file.

These are texts and values only; ``deb_tree.stage`` writes them into the
package tree. The changelog's date comes from ``SOURCE_DATE_EPOCH`` when it is
set, so that a build can be repeated to the byte.
"""

from __future__ import annotations

import email.utils
import gzip
import os
import re
import textwrap
import time

from deb_layout import PACKAGE, VENV, WHEELS, BuildError

MAINTAINER = "Tunnelgate developers <tunnelgate@packages.invalid>"
SYNOPSIS = "SSL-VPN client for Linux: tray app, privileged service, CLI"

# What the programs need from Debian beyond what the wheels bring. The client
# talks netlink itself (pyroute2) and uses resolvectl only when
# systemd-resolved runs; iproute2 is there for the admin's own checks.
DEPENDS = ["python3-venv", "iproute2"]
# The tray app's Qt (PySide6 wheel) loads these system libraries: the xcb and
# wayland platform plugins, EGL/GL, fonts, D-Bus for the tray icon. Recommended,
# not required, so that a headless machine (CLI, service, gateway) can skip them.
RECOMMENDS = [
    "libegl1", "libgl1", "libfontconfig1", "libfreetype6", "libdbus-1-3",
    "libglib2.0-0t64 | libglib2.0-0", "libxkbcommon0", "libxkbcommon-x11-0", "libx11-xcb1",
    "libxcb-cursor0", "libxcb-icccm4", "libxcb-image0", "libxcb-keysyms1", "libxcb-randr0",
    "libxcb-render-util0", "libxcb-shape0", "libxcb-xkb1", "libwayland-client0", "libwayland-cursor0",
]
# Where `tunnelgate profiles set-password` keeps passwords (Secret Service over D-Bus).
SUGGESTS = ["gnome-keyring"]


def debian_version(version: str) -> str:
    """A PEP 440 version as a Debian one: pre-releases sort before the release (1.0rc1 -> 1.0~rc1)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)*)((?:a|b|rc)\d+)?(?:\.post(\d+))?(?:\.dev(\d+))?(?:\+([\w.]+))?",
                         version)
    if not match:
        raise BuildError(f"cannot turn version {version!r} into a Debian version")
    release, pre, post, dev, local = match.groups()
    out = release + (f"~{pre}" if pre else "") + (f"+post{post}" if post else "")
    out += f"~dev{dev}" if dev else ""
    return out + (f"+{local}" if local else "")


def description(python: tuple[int, int], arch: str) -> str:
    pv = "%d.%d" % python
    paragraphs = [
        "Tunnelgate connects a Linux desktop to an organisation's private networks through a "
        "Tunnelgate gateway (MASQUE-style HTTP/2 over TLS). It has a privileged systemd service "
        "that holds the VPN engine (service tunnelgate; members of group tunnelgate may use it), "
        "the command-line client tunnelgate, the tray app tunnelgate-tray and the bundled gateway "
        "tunnelgate-gateway.",
        f"This package is built for Python {pv} on {arch}: it ships the wheels of the program and "
        f"of all its dependencies (PySide6 included) in {WHEELS}, and its postinst installs them, "
        f"without network access, into a virtual environment in {VENV} made with /usr/bin/python3, "
        f"which must be Python {pv}. For another Python version or architecture, build another "
        "package with packaging/build_deb.py on a machine of that kind.",
    ]
    body = "\n.\n".join(textwrap.fill(p, width=78) for p in paragraphs)
    return f"{SYNOPSIS}\n" + "\n".join(" " + line for line in body.splitlines())


def changelog(version: str, maintainer: str) -> bytes:
    when = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    text = (f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
            f"  * Built from the Tunnelgate sources by packaging/build_deb.py.\n\n"
            f" -- {maintainer}  {email.utils.formatdate(when)}\n")
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tunnelgate

Files: *
Copyright: (c) the Tunnelgate developers
License: Expat

Files: usr/share/tunnelgate/wheels/*
Copyright: the authors of each package
License: various
 Each wheel is a third-party package from the Python Package Index, under its
 own licence, which its .dist-info folder holds (for example PySide6: LGPL-3;
 cryptography: Apache-2.0 or BSD-3-clause).

License: Expat
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
"""
