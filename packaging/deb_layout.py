"""What every stage of the .deb build shares: where the checkout is, the
package's name and its places on the target, and the one error of the build.

``BuildError`` and ``run`` live here, beside the names, because every stage
raises the one and most call the other, and ``build_deb.main`` must catch the
very class the stages raise: defined in this leaf module, it exists once, with
no import cycle back to the entry script (which runs as ``__main__``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"

PACKAGE = "tunnelgate"
VENV = "/opt/tunnelgate"
WHEELS = "/usr/share/tunnelgate/wheels"
EXTRAS = "gui"
UNIT_DIR = "/usr/lib/systemd/system"
SYSUSERS_DIR = "/usr/lib/sysusers.d"


class BuildError(Exception):
    """A step failed; the message says which and why."""


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a command; on failure raises BuildError with its output."""
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
                         f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return result
