"""The package tree: the folder that dpkg-deb turns into the .deb.

``stage`` lays it out in two passes. First the payload: the wheels, the
/usr/bin symlinks into the virtual environment that postinst makes, the
systemd unit and sysusers entry, the wheel's data files that belong in
/usr/share (desktop entry, menu icon) and the doc folder. Then DEBIAN/, made
from the payload as it stands: md5sums, the control file (its Installed-Size,
and the glibc pinned by the neediest wheel) and the maintainer scripts from
packaging/deb/ with their @FIELDS@ filled in.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from deb_layout import EXTRAS, PACKAGE, PACKAGING, ROOT, SYSUSERS_DIR, UNIT_DIR, VENV, WHEELS, BuildError
from deb_metadata import COPYRIGHT, DEPENDS, RECOMMENDS, SUGGESTS, changelog, debian_version, description
from deb_wheels import WHEEL_ARCH, wheel_glibc


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
