#!/usr/bin/env bash
# The browser the UI tests drive: Debian's chromium (Playwright's Python package talks to it; its
# own browser download is never used). Installed with apt when /usr/bin/chromium is missing.
set -euo pipefail
CHROMIUM=${RAGTUNE_UI_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  echo "browser: $CHROMIUM already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: no $CHROMIUM and no apt-get: install chromium yourself and set RAGTUNE_UI_CHROMIUM" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium
echo "browser: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
