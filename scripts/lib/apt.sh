# Sourced (not run) by the harness scripts that install Debian packages.
#
# Why one lock for all of them: pytest's workers start Slurm, Grid Engine, OpenPBS,
# the PBS wrappers and Chromium at the same moment on a fresh machine. Two apt-gets at
# once fail on dpkg's lock ("Could not get lock /var/lib/dpkg/lock-frontend"), and a
# debconf-set-selections beside a running dpkg fails on debconf's; a whole CI run was
# lost to it. So every install by corral's scripts holds one flock, and apt is told to
# wait for its own locks when someone outside corral holds them.
#
#   apt_lock           take the lock (waits up to 20 min); hold it across debconf + install
#   apt_unlock         give it back
#   apt_install ARG... apt-get install -y ARG... under the lock (taken here if not held),
#                      updating the package lists once if a package is not known yet

CORRAL_APT_LOCK_FILE=${CORRAL_APT_LOCK_FILE:-/tmp/corral-apt.lock}
_corral_apt_locked=0

apt_lock() {
  exec 8>>"$CORRAL_APT_LOCK_FILE"
  flock -w 1200 8 || { echo "apt: waited 20 minutes for $CORRAL_APT_LOCK_FILE" >&2; return 1; }
  _corral_apt_locked=1
}

apt_unlock() {
  [ "$_corral_apt_locked" = 1 ] || return 0
  flock -u 8
  exec 8>&-
  _corral_apt_locked=0
}

# Runs apt-get with ARGS, retrying for up to 10 minutes while a lock is held by another
# program (apt-get update does not wait on DPkg::Lock::Timeout for the lists lock).
_corral_apt_get() {
  local log try
  log=$(mktemp)
  for try in $(seq 200); do
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" >"$log" 2>&1; then
      rm -f "$log"; return 0
    fi
    grep -q 'Could not get lock\|Unable to acquire\|is locked by another process' "$log" || break
    sleep "${CORRAL_APT_RETRY_SECONDS:-3}"
  done
  cat "$log" >&2
  rm -f "$log"
  return 1
}

apt_install() {
  local took=0 rc=0
  if [ "$_corral_apt_locked" != 1 ]; then apt_lock; took=1; fi
  if ! _corral_apt_get install -y -qq "$@" 2>/dev/null; then
    _corral_apt_get update -qq || true
    _corral_apt_get install -y -qq "$@" || rc=$?
  fi
  if [ "$took" = 1 ]; then apt_unlock; fi
  return "$rc"
}
