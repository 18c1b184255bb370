#!/bin/bash
# Copied from ../shared/openpbs/build-openpbs.sh (the recipe shared with this project).
# Build and install OpenPBS from source into /opt/pbs (Debian 12).
# Idempotent: does nothing if /opt/pbs/bin/qsub already exists (FORCE=1 to rebuild).
#
# Usage: build-openpbs.sh [SOURCE_TARBALL]
#   SOURCE_TARBALL (or env OPENPBS_TARBALL): .tar / .tar.gz of the openpbs source tree
#   (with or without one top-level directory). Default: the bundled
#   openpbs-src.tar.gz next to this script (git archive of OpenPBS, see README.md).
# Env: PBS_PREFIX (/opt/pbs), BUILD_DIR (/tmp/openpbs-build), JOBS (nproc), SKIP_APT=1
set -euo pipefail

PBS_PREFIX=${PBS_PREFIX:-/opt/pbs}
BUILD_DIR=${BUILD_DIR:-/tmp/openpbs-build}
TARBALL=${1:-${OPENPBS_TARBALL:-$(cd "$(dirname "$0")" && pwd)/openpbs-src.tar.gz}}
JOBS=${JOBS:-$(nproc)}
LOG_DIR=${LOG_DIR:-$BUILD_DIR/logs}

ts() { date +%s; }
step() { echo "== $(date +%T) $*"; }

# One build at a time: the test session starts one early, in the background, and the
# first test on OpenPBS calls this too; the second waits here, then finds it installed.
# A build cut short (its session interrupted) leaves its marker, and the next one
# builds again rather than trust a half-installed prefix.
exec 9>>"${CORRAL_OPENPBS_BUILD_LOCK:-/tmp/corral-openpbs-build.lock}"
flock 9
trap 'flock -u 9' EXIT  # (released for good: a daemon apt starts may hold a copy of fd 9)
IN_PROGRESS="$PBS_PREFIX.corral-build-in-progress"
if [ -x "$PBS_PREFIX/bin/qsub" ] && [ ! -e "$IN_PROGRESS" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "OpenPBS already installed at $PBS_PREFIX ($("$PBS_PREFIX/libexec/pbs_postinstall" --version 2>/dev/null || true)); skipping (FORCE=1 to rebuild)."
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
touch "$IN_PROGRESS"

T0=$(ts)
# ---- 1. build + run dependencies (INSTALL file, Debian section; libical3/libcjson1 for bookworm)
if [ "${SKIP_APT:-0}" != 1 ]; then
    step "apt-get install build/run deps"
    export DEBIAN_FRONTEND=noninteractive
    PKGS="gcc g++ make libtool autoconf automake pkg-config libhwloc-dev libx11-dev libxt-dev
          libedit-dev libical-dev libncurses-dev perl postgresql-server-dev-all postgresql
          postgresql-contrib python3 python3-dev tcl-dev tk-dev swig libexpat1-dev libssl-dev
          libxext-dev libxft-dev libcjson-dev expat libedit2 tcl tk libical3 libcjson1 sudo"
    # shellcheck disable=SC2086
    # shellcheck source=../lib/apt.sh
    source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
    apt_install $PKGS
    # the Debian 'postgresql' package may auto-create+start a 'main' cluster on 5432; PBS
    # does not need it (it runs its own cluster in PBS_HOME/datastore on port 15007).
fi
T1=$(ts)

# ---- 2. source tree
step "unpack source into $BUILD_DIR"
rm -rf "$BUILD_DIR/src"; mkdir -p "$BUILD_DIR/src" "$LOG_DIR"
[ -f "$TARBALL" ] || { echo "source tarball not found: $TARBALL" >&2; exit 1; }
echo "   (source: $TARBALL)"
tar -xf "$TARBALL" -C "$BUILD_DIR/src"
SRC=$(dirname "$(find "$BUILD_DIR/src" -maxdepth 2 -name autogen.sh | head -1)")
[ -f "$SRC/configure.ac" ] || { echo "no openpbs source (autogen.sh) found in $TARBALL" >&2; exit 1; }
cd "$SRC"

# ---- 3. autogen + configure. PYTHON pinned to Debian's /usr/bin/python3 so a pyenv/venv
# python3 earlier in PATH is not picked up (it would lack matching headers/libpython).
step "autogen + configure"
./autogen.sh > "$LOG_DIR/autogen.log" 2>&1
# Unoptimised, without debug information: a one-node test cluster runs as well, and the
# compile takes 75 s on two cores instead of 180 (CFLAGS in the environment win).
export CFLAGS=${CFLAGS:--O0 -g0} CXXFLAGS=${CXXFLAGS:--O0 -g0}
PYTHON=/usr/bin/python3 ./configure --prefix="$PBS_PREFIX" --with-python=/usr \
    > "$LOG_DIR/configure.log" 2>&1
T2=$(ts)

step "make -j$JOBS (log: $LOG_DIR/make.log)"
make -j"$JOBS" > "$LOG_DIR/make.log" 2>&1 || { tail -30 "$LOG_DIR/make.log"; exit 1; }
T3=$(ts)

step "make install"
make install > "$LOG_DIR/make-install.log" 2>&1 || { tail -30 "$LOG_DIR/make-install.log"; exit 1; }
chmod 4755 "$PBS_PREFIX/sbin/pbs_iff" "$PBS_PREFIX/sbin/pbs_rcp"
T4=$(ts)

# ---- 4. post-install: creates /etc/pbs.conf, PBS_HOME (/var/spool/pbs), /etc/init.d/pbs.
# (Its systemd/update-rc.d registration fails harmlessly in a container without systemd.)
# start-openpbs.sh rewrites /etc/pbs.conf for the one-node setup and re-runs this when
# PBS_HOME is missing.
step "pbs_postinstall"
"$PBS_PREFIX/libexec/pbs_postinstall" > "$LOG_DIR/postinstall.log" 2>&1 || { cat "$LOG_DIR/postinstall.log"; exit 1; }
T5=$(ts)
rm -f "$IN_PROGRESS"

echo "== timings (s): apt=$((T1-T0)) unpack+autogen+configure=$((T2-T1)) make=$((T3-T2)) install=$((T4-T3)) postinstall=$((T5-T4)) total=$((T5-T0))"
echo "== installed size: $(du -sh "$PBS_PREFIX" | cut -f1) in $PBS_PREFIX; build tree: $(du -sh "$BUILD_DIR" | cut -f1)"
