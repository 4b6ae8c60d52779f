#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmark need on a fresh
# Debian machine (run as root): system tools for the lab, then the project
# with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in ip:iproute2 iperf3:iperf3 ping:iputils-ping curl:curl dig:dnsutils dnsmasq:dnsmasq-base \
            wrk:wrk ss:iproute2 openssl:openssl nginx:nginx-light; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
# Libraries Qt needs for the tray app and its offscreen tests; Debian's own Python with
# pip and venv, which build and install the .deb (tests/test_deb.py).
for pkg in libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0 python3-pip python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
