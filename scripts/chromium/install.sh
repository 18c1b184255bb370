#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the browser tests, when missing.
# Safe to run from two test workers at once: the second waits for the first (flock),
# and apt's own lock is shared with the other harness installs (scripts/lib/apt.sh).
set -euo pipefail
exec 9>"${TMPDIR:-/tmp}/corral-chromium-install.lock"
flock 9
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "chromium is not installed and apt-get is missing: install chromium and chromedriver" >&2
  exit 1
fi
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
apt_install chromium chromium-driver
