"""The wheels the package ships, and what they ask of the target machine.

The project's own wheel is built by the interpreter running the build, from a
copy of the sources (the checkout is left alone); the dependencies' wheels,
binary only, are resolved by the target's interpreter (``--python``), which
also decides the environment markers. ``wheel_glibc`` reads a wheel's platform
tags to find the oldest glibc it runs on, so that the control file can pin it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from deb_layout import EXTRAS, PACKAGE, ROOT, BuildError, run

# Debian architecture -> the machine name in wheel platform tags.
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "armhf": "armv7l",
              "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
# Legacy manylinux names and the glibc they stand for (PEP 600).
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}

SKIP = shutil.ignore_patterns(".git", "tests", "build", "dist", "*.egg-info", "__pycache__", "bench-results",
                              ".benchmarks", ".pytest_cache", ".hypothesis", ".ci", "docs")


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
