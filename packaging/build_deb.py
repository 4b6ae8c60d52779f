#!/usr/bin/env python3
"""Builds the Debian package of Tunnelgate: ``tunnelgate_<version>_<arch>.deb``.

    python3 packaging/build_deb.py --out DIR [--python /usr/bin/python3]

The package holds no Python code of its own in the system's site-packages.
It ships the project's wheel and the wheels of every dependency, the ``gui``
extra included, under /usr/share/tunnelgate/wheels. Its postinst makes a
virtual environment in /opt/tunnelgate with the target's /usr/bin/python3 and
installs them from there (no index, no network). /usr/bin holds symlinks to
the console scripts; the systemd unit, the sysusers entry, the desktop entry
and the menu icon are plain files of the package.

Compiled wheels fit one Python minor version and one architecture, so a
package is built for one of each: the wheels are resolved by ``--python``
(default /usr/bin/python3, the target's interpreter when building on the
Debian release the package is for; it needs pip, e.g. python3-pip), binary
wheels only, for the machine's architecture (that interpreter also decides the
environment markers, such as python_version < "3.12"). The control file pins
``python3 (>= X.Y), python3 (<< X.Y+1)`` and the glibc the wheels need, so dpkg
refuses a machine the wheels do not fit. The project's own wheel is pure
Python and is built by the interpreter running this script.

Needs dpkg-deb (package dpkg) and network access to the package index (or a
pip configuration that points at a mirror). The sources are copied to a
temporary folder to build the wheel: the checkout gets only the .deb, and only
with the default --out (build/deb, which git ignores).
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"

PACKAGE = "tunnelgate"
VENV = "/opt/tunnelgate"
WHEELS = "/usr/share/tunnelgate/wheels"
EXTRAS = "gui"
UNIT_DIR = "/usr/lib/systemd/system"
SYSUSERS_DIR = "/usr/lib/sysusers.d"

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

# Debian architecture -> the machine name in wheel platform tags.
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "armhf": "armv7l",
              "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
# Legacy manylinux names and the glibc they stand for (PEP 600).
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}

SKIP = shutil.ignore_patterns(".git", "tests", "build", "dist", "*.egg-info", "__pycache__", "bench-results",
                              ".benchmarks", ".pytest_cache", ".hypothesis", ".ci", "docs")


class BuildError(Exception):
    """A step failed; the message says which and why."""


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a command; on failure raises BuildError with its output."""
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
                         f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return result


def project() -> dict:
    """The [project] table of pyproject.toml, plus the setuptools data-files."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table = dict(data["project"])
    table["data-files"] = data.get("tool", {}).get("setuptools", {}).get("data-files", {})
    return table


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


def python_version(python: str) -> tuple[int, int]:
    """The (major, minor) of an interpreter; BuildError if it cannot run pip."""
    if not shutil.which(python):
        raise BuildError(f"no interpreter {python}: give --python with one of the target's Python version")
    out = run([python, "-c", "import sys; print(*sys.version_info[:2])"]).stdout.split()
    try:
        run([python, "-m", "pip", "--version"])
    except BuildError:
        raise BuildError(f"{python} has no pip (on Debian: apt-get install python3-pip), "
                         "or give --python with another interpreter of the target's version") from None
    return int(out[0]), int(out[1])


def build_wheels(python: str, dest: Path, work: Path) -> list[Path]:
    """The project's wheel (built here) and its dependencies' (binary only, resolved by python)."""
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    own = work / "own"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
         "-w", str(own), str(source)], timeout=600)
    (wheel,) = own.glob(f"{PACKAGE}-*.whl")
    run([python, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
         "-d", str(dest), f"{wheel}[{EXTRAS}]"], timeout=1200)
    return sorted(dest.glob("*.whl"))


def wheel_glibc(wheel: Path, arch: str) -> tuple[int, int]:
    """The oldest glibc one wheel runs on, (0, 0) for a pure one; BuildError if it is for another platform."""
    platforms = wheel.name[:-len(".whl")].split("-")[-1].split(".")
    if platforms == ["any"]:
        return (0, 0)
    needs = []
    for platform in platforms:
        match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
        if match:
            needs.append(((int(match[1]), int(match[2])), match[3]))
        elif platform.split("_", 1)[0] in LEGACY_MANYLINUX:
            needs.append((LEGACY_MANYLINUX[platform.split("_", 1)[0]], platform.split("_", 1)[1]))
        elif platform.startswith("linux_"):
            # Built on some machine, not a manylinux build: assume it needs this machine's glibc.
            libc = os.confstr("CS_GNU_LIBC_VERSION").split()[1]
            needs.append((tuple(int(p) for p in libc.split(".")[:2]), platform[len("linux_"):]))
    fitting = [glibc for glibc, machine in needs if machine == arch]
    if not fitting:
        raise BuildError(f"{wheel.name} is not for Linux on {arch}")
    return min(fitting)


def dpkg_architecture() -> str:
    return run(["dpkg", "--print-architecture"]).stdout.strip()


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


def put(root: Path, path: str, data: bytes | str, mode: int = 0o644) -> Path:
    """Writes one file of the package tree (path is absolute on the target)."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    target.chmod(mode)
    return target


def stage(root: Path, meta: dict, wheels: list[Path], python: tuple[int, int], arch: str,
          maintainer: str) -> str:
    """Lays out the package tree under root; returns the Debian version."""
    version = debian_version(meta["version"])
    for wheel in wheels:
        put(root, f"{WHEELS}/{wheel.name}", wheel.read_bytes())
    for script in sorted({**meta.get("scripts", {}), **meta.get("gui-scripts", {})}):
        link = root / "usr/bin" / script
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{VENV}/bin/{script}")
    put(root, f"{UNIT_DIR}/tunnelgate.service", (PACKAGING / "tunnelgate.service").read_bytes())
    put(root, f"{SYSUSERS_DIR}/tunnelgate.conf", (PACKAGING / "tunnelgate.conf").read_bytes())
    # The wheel's data files that menus and icon themes look for in /usr/share
    # (its own icons, share/tunnelgate/icons, stay in the venv with the program).
    for target, sources in meta["data-files"].items():
        if target.startswith("share/tunnelgate"):
            continue
        for pattern in sources:
            for source in sorted(ROOT.glob(pattern)):
                put(root, f"/usr/{target}/{source.name}", source.read_bytes())
    doc = f"/usr/share/doc/{PACKAGE}"
    put(root, f"{doc}/copyright", COPYRIGHT)
    put(root, f"{doc}/changelog.gz", changelog(version, maintainer))
    put(root, f"{doc}/README.md.gz", gzip.compress((ROOT / "README.md").read_bytes(), 9, mtime=0))
    # Named by the unit's Documentation= line, so not compressed.
    put(root, f"{doc}/control-api.md", (ROOT / "docs" / "control-api.md").read_bytes())

    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
    size_kib = sum(-(-p.stat().st_size // 1024) for p in files) + sum(1 for p in root.rglob("*") if p.is_dir())
    control = root / "DEBIAN"
    control.mkdir()
    md5sums = "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n" for p in files)
    put(root, "/DEBIAN/md5sums", md5sums)
    pv = "%d.%d" % python
    glibc = max(wheel_glibc(w, WHEEL_ARCH.get(arch, arch)) for w in wheels)
    depends = [f"python3 (>= {pv})", f"python3 (<< {python[0]}.{python[1] + 1})", *DEPENDS]
    if glibc > (0, 0):
        depends.append("libc6 (>= %d.%d)" % glibc)
    fields = {
        "Package": PACKAGE,
        "Version": version,
        "Architecture": arch,
        "Maintainer": maintainer,
        "Installed-Size": str(size_kib),
        "Depends": ", ".join(depends),
        "Recommends": ", ".join(RECOMMENDS),
        "Suggests": ", ".join(SUGGESTS),
        "Section": "net",
        "Priority": "optional",
        "Description": description(python, arch),
    }
    put(root, "/DEBIAN/control", "".join(f"{k}: {v}\n" for k, v in fields.items()))
    requirement = f"{PACKAGE}[{EXTRAS}]=={meta['version']}"
    for name in ("postinst", "prerm", "postrm"):
        text = (PACKAGING / "deb" / name).read_text()
        text = text.replace("@PYTHON_VERSION@", pv).replace("@REQUIREMENT@", requirement)
        leftover = re.findall(r"@[A-Z_]+@", text)
        if leftover:
            raise BuildError(f"packaging/deb/{name}: this script does not fill in {', '.join(leftover)}")
        put(root, f"/DEBIAN/{name}", text, 0o755)
    for path in root.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    return version


def build(out: Path, python: str, maintainer: str, compression: str) -> Path:
    """Builds the package into out; returns its path."""
    if not shutil.which("dpkg-deb"):
        raise BuildError("dpkg-deb is missing (Debian package dpkg)")
    meta = project()
    arch = dpkg_architecture()
    target = python_version(python)
    requires = re.fullmatch(r">=\s*(\d+)\.(\d+)", meta.get("requires-python", ">=3.0").strip())
    if requires and target < (int(requires[1]), int(requires[2])):
        raise BuildError(f"{python} is Python %d.%d; the project needs {meta['requires-python']}" % target)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tunnelgate-deb-") as tmp:
        work = Path(tmp)
        wheels = build_wheels(python, work / "wheels", work)
        root = work / "root"
        root.mkdir()
        version = stage(root, meta, wheels, target, arch, maintainer)
        deb = out / f"{PACKAGE}_{version}_{arch}.deb"
        run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(deb)],
            timeout=900)
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "deb",
                        help="folder for the .deb (default build/deb in the checkout, which git ignores)")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="an interpreter of the target's Python version, with pip; it resolves the "
                             "dependency wheels (default /usr/bin/python3)")
    parser.add_argument("--maintainer",
                        default=(f"{os.environ['DEBFULLNAME']} <{os.environ['DEBEMAIL']}>"
                                 if os.environ.get("DEBFULLNAME") and os.environ.get("DEBEMAIL") else MAINTAINER),
                        help="the Maintainer field (default $DEBFULLNAME <$DEBEMAIL>, else a placeholder)")
    # The payload is mostly wheels, zip files already: xz takes a minute to save 0.5 %.
    parser.add_argument("--compression", default="gzip", choices=("gzip", "xz", "zstd", "none"),
                        help="dpkg-deb compression (default gzip)")
    args = parser.parse_args(argv)
    try:
        deb = build(args.out.resolve(), args.python, args.maintainer, args.compression)
    except (BuildError, subprocess.TimeoutExpired) as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
