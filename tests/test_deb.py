"""The Debian package: built from the checkout by packaging/build_deb.py, inspected,
then installed for real with dpkg on this (throwaway, CI) machine, used, and purged.

The build resolves the dependency wheels with /usr/bin/python3's pip from the package
index (about 25 s with a cold pip cache, 15 s warm); the install takes another 15 s. Installing needs root and changes the
system: /opt/tunnelgate, /usr/bin/tunnelgate*, the unit, group tunnelgate. The test
therefore skips, rather than clobbers, when any of that is already there and not its
own, and purges the package (and drops the group if it made it) whatever happens.
The installed programs are run by absolute path with a bare environment, so the
checkout's editable install (on PATH before /usr/bin) is never what runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import write_small_config

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "packaging" / "build_deb.py"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VENV = Path("/opt/tunnelgate")
SCRIPTS = sorted({**PROJECT["scripts"], **PROJECT["gui-scripts"]})
SYSTEM_PYTHON = "/usr/bin/python3"

# Needs root to install, the package index to build; takes a minute or two.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


def _installed(package: str) -> bool:
    status = _run(["dpkg-query", "-W", "-f", "${Status}", package]).stdout
    return status.endswith(" installed")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _python_version() -> str:
    return _run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    """The .deb built by packaging/build_deb.py, into a temporary folder."""
    for tool in ("dpkg", "dpkg-deb", "dpkg-query"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing: not a Debian system")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON} to build the package for")
    if _run([SYSTEM_PYTHON, "-m", "pip", "--version"]).returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no pip to resolve the wheels (apt-get install python3-pip)")
    out = tmp_path_factory.mktemp("deb")
    result = _run([sys.executable, BUILDER, "--out", out], timeout=840)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("*.deb")
    assert result.stdout.strip() == str(path)
    return path


def test_the_package_has_its_control_fields_scripts_and_files(deb, tmp_path):
    """Name, version and architecture; Depends pins the Python minor version the wheels are
    for; the files are the unit, sysusers entry, desktop entry, icon, wheels for every
    dependency (gui extra included) and /usr/bin symlinks into the venv, nothing in /opt."""
    version, arch = PROJECT["version"], _run(["dpkg", "--print-architecture"]).stdout.strip()
    assert deb.name == f"tunnelgate_{version}_{arch}.deb"
    fields = dict(re.findall(r"^(\S+): (.*)$",
                             _run(["dpkg-deb", "--field", deb, "Package", "Version", "Architecture", "Depends",
                                   "Maintainer", "Section", "Installed-Size", "Description"]).stdout, re.M))
    assert fields["Package"] == "tunnelgate"
    assert fields["Version"] == version
    assert fields["Architecture"] == arch
    assert fields["Section"] == "net"
    major, minor = map(int, _python_version().split("."))
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert f"python3 (>= {major}.{minor})" in depends
    assert f"python3 (<< {major}.{minor + 1})" in depends
    assert {"python3-venv", "iproute2"} <= set(depends)
    assert any(re.fullmatch(r"libc6 \(>= 2\.\d+\)", d) for d in depends), depends
    info = _run(["dpkg-deb", "--info", deb]).stdout
    assert f"built for Python {major}.{minor} on {arch}" in info
    for script in ("postinst", "prerm", "postrm", "md5sums"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", info, re.M), script

    control = tmp_path / "control"
    _run(["dpkg-deb", "--control", deb, control], check=True)
    for script in ("postinst", "prerm", "postrm"):
        text = (control / script).read_text()
        assert not re.search(r"@[A-Z_]+@", text), f"{script} has a field left unfilled"
        assert _run(["sh", "-n", control / script]).returncode == 0, script
    assert f"BUILT_FOR={major}.{minor}\n" in (control / "postinst").read_text()

    entries = {}
    for line in _run(["dpkg-deb", "--contents", deb]).stdout.splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        assert owner == "root/root", line
        entries[path.rstrip("/")] = (mode, target)
    for script in SCRIPTS:
        assert entries[f"./usr/bin/{script}"] == ("lrwxrwxrwx", f"{VENV}/bin/{script}")
    for path in ("usr/lib/systemd/system/tunnelgate.service", "usr/lib/sysusers.d/tunnelgate.conf",
                 "usr/share/applications/tunnelgate-tray.desktop",
                 "usr/share/icons/hicolor/scalable/apps/tunnelgate.svg",
                 "usr/share/doc/tunnelgate/copyright", "usr/share/doc/tunnelgate/control-api.md"):
        assert entries[f"./{path}"][0] == "-rw-r--r--", path
    assert not [p for p in entries if p.startswith("./opt")], "dpkg must own nothing in /opt"
    wheels = {Path(p).name for p in entries if p.startswith("./usr/share/tunnelgate/wheels/")}
    assert f"tunnelgate-{version}-py3-none-any.whl" in wheels
    shipped = {_normal(name.split("-")[0]) for name in wheels}
    required = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["gui"]
    for requirement in required:
        assert _normal(re.match(r"[A-Za-z0-9._-]+", requirement)[0]) in shipped, requirement

    files = tmp_path / "files"
    _run(["dpkg-deb", "--extract", deb, files], check=True)
    unit = files / "usr/lib/systemd/system/tunnelgate.service"
    assert unit.read_bytes() == (ROOT / "packaging/tunnelgate.service").read_bytes()

    if shutil.which("lintian"):
        lint = _run(["lintian", "--fail-on", "error", deb], timeout=300)
        assert lint.returncode == 0 and not re.search(r"^E: ", lint.stdout, re.M), lint.stdout + lint.stderr


def test_the_package_installs_runs_and_purges_without_a_trace(request, tmp_path):
    """dpkg -i builds /opt/tunnelgate with Debian's python3 from the shipped wheels only; the
    /usr/bin commands work (help, hash-password from stdin, check-config on a small config),
    run the venv's code, the tray app's Qt loads with its icons; dpkg --purge removes it all."""
    if os.geteuid() != 0:
        pytest.skip("installing the .deb needs root")
    for tool in ("dpkg", "dpkg-deb", "dpkg-query"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing: not a Debian system")
    if _installed("tunnelgate"):
        pytest.skip("a tunnelgate package is installed already; not touching it")
    ours = [VENV, Path("/usr/share/tunnelgate"), *(Path("/usr/bin") / s for s in SCRIPTS)]
    present = [str(p) for p in ours if os.path.lexists(p)]
    if present:
        pytest.skip(f"{', '.join(present)} exist(s) and are not from this package; not clobbering")
    missing = [p for p in ("python3-venv", "iproute2") if not _installed(p)]
    if missing:
        pytest.skip(f"the package depends on {', '.join(missing)}: apt-get install {' '.join(missing)}")
    deb = request.getfixturevalue("deb")   # built only once the machine is known to be fit

    group_before = _run(["getent", "group", "tunnelgate"]).returncode == 0
    state_before = os.path.lexists("/var/lib/tunnelgate")
    wants = Path("/etc/systemd/system/multi-user.target.wants/tunnelgate.service")
    wants_before = os.path.lexists(wants)
    # A bare environment: no PATH entry of the editable install, no PYTHONPATH.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    try:
        # dpkg runs with this process's environment (PIP_* variables, a pip
        # configuration with extra indexes): postinst must ignore all of it.
        install = _run(["dpkg", "-i", deb], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        assert install.returncode == 0, install.stdout + install.stderr
        assert _installed("tunnelgate")
        for script in SCRIPTS:
            assert Path("/usr/bin", script).resolve() == VENV / "bin" / script
        cfg = (VENV / "pyvenv.cfg").read_text()
        assert "include-system-site-packages = false" in cfg
        assert f"version = {_python_version()}." in cfg

        usage = _run(["/usr/bin/tunnelgate", "--help"], env=env, cwd=tmp_path)
        assert usage.returncode == 0, usage.stderr
        assert "connect" in usage.stdout and "service" in usage.stdout

        hashed = _run(["/usr/bin/tunnelgate-gateway", "hash-password"], input="correct horse\n", env=env,
                      cwd=tmp_path)
        assert hashed.returncode == 0, hashed.stderr
        encoded = hashed.stdout.strip()
        assert encoded.startswith("scrypt:")

        config = write_small_config(tmp_path, encoded)
        check = _run(["/usr/bin/tunnelgate-gateway", "check-config", "--config", config], env=env, cwd=tmp_path)
        assert check.returncode == 0, check.stderr
        assert f"{config}: OK" in check.stdout
        assert "alice [staff]: may reach intranet-web" in check.stdout

        # The venv's code, not the checkout's: modules, the password check, the
        # tray app's Qt with its icons, the compiled dependencies.
        probe = f"""\
import client, gateway_stub, gui.app, gui.icons, pytun, uvloop, cryptography, psutil, keyring
from gateway_stub.passwords import verify_password
from PySide6.QtWidgets import QApplication
from PySide6.QtGui import QIcon
app = QApplication([])
assert verify_password("correct horse", {encoded!r})
assert not verify_password("wrong horse", {encoded!r})
for kind in gui.icons.KINDS + ("app",):
    assert not QIcon(str(gui.icons.icon_path(kind))).isNull(), kind
print(client.__file__, gateway_stub.__file__, gui.app.__file__, gui.icons.icon_path("app"), sep="\\n")
"""
        imported = _run([VENV / "bin/python", "-c", probe], cwd=tmp_path,
                        env={**env, "QT_QPA_PLATFORM": "offscreen"})
        assert imported.returncode == 0, imported.stderr
        for path in imported.stdout.split():
            assert Path(path).is_relative_to(VENV / "lib") or Path(path).is_relative_to(VENV / "share"), path

        assert _run(["getent", "group", "tunnelgate"]).returncode == 0
        unit = Path("/usr/lib/systemd/system/tunnelgate.service")
        exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.M)[1]
        assert os.access(exec_start, os.X_OK), exec_start
        if shutil.which("systemd-analyze"):
            verify = _run(["systemd-analyze", "verify", unit])
            assert verify.returncode == 0, verify.stderr
        assert os.path.exists(Path("/usr/share/applications/tunnelgate-tray.desktop"))
    finally:
        purge = _run(["dpkg", "--purge", "tunnelgate"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if not group_before:
            _run(["groupdel", "tunnelgate"])
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not _installed("tunnelgate")
    left = [str(p) for p in (*ours, Path("/usr/lib/systemd/system/tunnelgate.service"),
                             Path("/usr/lib/sysusers.d/tunnelgate.conf"),
                             Path("/usr/share/applications/tunnelgate-tray.desktop"),
                             Path("/usr/share/doc/tunnelgate"))
            if os.path.lexists(p)]
    if not state_before:
        left += ["/var/lib/tunnelgate"] if os.path.lexists("/var/lib/tunnelgate") else []
    if not wants_before:
        left += [str(wants)] if os.path.lexists(wants) else []
    assert not left, f"left behind after purge: {left}"
    assert not Path("/usr/bin/tunnelgate").exists()
