#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the browser tests, when missing.
# Safe to run from two test workers at once: the second waits for the first (flock),
# and apt's own lock, if someone else holds it, is waited for too.
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
log="${TMPDIR:-/tmp}/corral-chromium-apt.log"
apt-get update -qq >"$log" 2>&1 || true
for try in 1 2 3 4 5 6 7 8 9 10; do
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    chromium chromium-driver >"$log" 2>&1 && exit 0
  grep -q 'Could not get lock\|dpkg was interrupted' "$log" || { cat "$log" >&2; exit 1; }
  sleep 3
done
cat "$log" >&2
exit 1
