#!/usr/bin/env bash
# Installs what tierflow needs on a fresh Debian/Ubuntu machine with Rust: system packages for the
# build and the test servers, and the Python SDKs the integration tests drive. Idempotent.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need_apt=()
pkgs=(pkg-config libhyperscan-dev redis-server python3-pip systemd)
# The dashboard test drives Debian's headless Chromium; sqlite3 reads ledgers in the load script.
if [ "${1:-}" = "--test" ]; then pkgs+=(chromium sqlite3); fi
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  python3 -c "import openai, anthropic" 2>/dev/null || python3 -m pip install -q "openai>=1.50" "anthropic>=0.40"
fi
