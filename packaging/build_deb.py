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

This script is the entry point and runs the stages in order; each lives in a
module beside it: deb_layout (names, places, BuildError), deb_wheels (building
and resolving the wheels, the glibc they need), deb_metadata (version,
relations, description, changelog, copyright) and deb_tree (the package tree
with its DEBIAN/ folder), then dpkg-deb makes the .deb.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from deb_layout import PACKAGE, ROOT, BuildError, run
from deb_metadata import MAINTAINER
from deb_tree import stage
from deb_wheels import build_wheels, python_version


def project() -> dict:
    """The [project] table of pyproject.toml, plus the setuptools data-files."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table = dict(data["project"])
    table["data-files"] = data.get("tool", {}).get("setuptools", {}).get("data-files", {})
    return table


def dpkg_architecture() -> str:
    return run(["dpkg", "--print-architecture"]).stdout.strip()


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
