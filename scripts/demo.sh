#!/usr/bin/env bash
# Sets up a fresh machine and runs the demo: a namespace lab with the bundled
# gateway, an intranet web server, and the client connected through the tunnel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 scripts/demo.py "$@"
