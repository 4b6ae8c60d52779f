"""The wheel as a user installs it: the tray app must find its icons outside a checkout,
and the desktop entry and its icon must land where application menus look.

Builds the wheel from a copy of the sources (pip, with build isolation: it fetches
setuptools from the package index) and installs it, without dependencies, into a
fresh virtual environment that sees this interpreter's packages (PySide6).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import venv
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "tests", "build", "*.egg-info", "__pycache__", "bench-results",
                              ".pytest_cache", ".hypothesis")


def build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True, timeout=240)
    (wheel,) = out.glob("tunnelgate-*.whl")
    return wheel


def test_the_installed_tray_app_finds_its_icons_and_ships_a_desktop_entry(tmp_path):
    """Icons, desktop entry and menu icon are in the wheel; installed, gui.icons resolves
    every icon to an existing file under the environment, not to a checkout."""
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    assert sorted(n for n in data if n.startswith("share/tunnelgate/icons/")) == [
        f"share/tunnelgate/icons/{kind}.svg"
        for kind in ("connected", "connecting", "disconnected", "error", "tunnelgate")]
    assert "share/applications/tunnelgate-tray.desktop" in data
    assert "share/icons/hicolor/scalable/apps/tunnelgate.svg" in data

    env = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True, text=True, timeout=240)
    probe = ("import gui.icons as i; print(i.__file__); "
             "print(*(i.icon_path(k) for k in i.KINDS + ('app',)), sep='\\n')")
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, check=True, capture_output=True,
                         text=True, timeout=60).stdout.split()
    module, icons = pathlib.Path(out[0]), [pathlib.Path(line) for line in out[1:]]
    assert module.is_relative_to(env), "the probe imported the checkout, not the wheel"
    assert len(icons) == 5
    for icon in icons:
        assert icon.is_file() and icon.resolve().is_relative_to(env.resolve()), icon
    desktop = (env / "share" / "applications" / "tunnelgate-tray.desktop").read_text()
    assert "Exec=tunnelgate-tray" in desktop and "Icon=tunnelgate" in desktop
