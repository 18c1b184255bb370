#!/bin/bash
# Copied from the shared recipe ../shared/sge/ (tested there, see its README.md and
# NOTE-for-projects.md for the traps it handles); started by tests/sge_cluster.py.
# sge-stop.sh - stop the single-node Grid Engine cluster started by sge-start.sh.
#
# Kills ONLY by PID: the PIDs come from the daemons' pid files and are checked
# against /proc/PID/exe (/usr/lib/gridengine/sge_qmaster|sge_execd) before any
# signal is sent.  Never uses pkill/killall or a process name.
#
#   1. if qmaster answers: qdel -f every job of every user, wait (<= 20 s) for the
#      job list to empty, so no job processes outlive the execd
#   2. SIGTERM sge_execd (by PID), wait, SIGKILL after SGE_STOP_TIMEOUT s;
#      then SIGKILL any sge_shepherd that was a child of that execd (by PID)
#   3. SIGTERM sge_qmaster (by PID), wait (it takes ~10 s for a controlled
#      shutdown), SIGKILL after SGE_STOP_TIMEOUT s
#   4. remove pid files.  Packages, configuration and spool are kept.
# Must run as root.  Exit 0 when nothing of ours is left running.
set -uo pipefail

LIBEXEC=/usr/lib/gridengine
SPOOL=/var/spool/gridengine
QSPOOL=$SPOOL/qmaster
ESPOOL=$SPOOL/execd
TIMEOUT=${SGE_STOP_TIMEOUT:-30}

log() { echo "[sge-stop $(date +%T)] $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
T_ALL=$(now)

pid_of_daemon() {
    local name=$1; shift
    local f p
    for f in "$@"; do
        [ -r "$f" ] || continue
        p=$(tr -dc '0-9' < "$f")
        [ -n "$p" ] || continue
        if [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$LIBEXEC/$name" ]; then
            echo "$p"; return 0
        fi
    done
    return 1
}
qmaster_pid() { pid_of_daemon sge_qmaster $QSPOOL/qmaster.pid /var/run/gridengine/qmaster.pid; }
execd_pid()   { pid_of_daemon sge_execd $ESPOOL/*/execd.pid /var/run/gridengine/execd.pid; }

# stop_pid PID LABEL : TERM, wait up to TIMEOUT, then KILL.  Only this PID.
stop_pid() {
    local p=$1 label=$2 t end
    t=$(now)
    kill -TERM "$p" 2>/dev/null || return 0
    end=$(( $(date +%s) + TIMEOUT ))
    while kill -0 "$p" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$end" ]; then
            log "$label (pid $p) still alive after ${TIMEOUT}s: SIGKILL"
            kill -KILL "$p" 2>/dev/null
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then log "ERROR: $label (pid $p) survived"; return 1; fi
    log "$label (pid $p) stopped in $(elapsed "$t")s"
}

RC=0
QM=$(qmaster_pid) || QM=""
EX=$(execd_pid) || EX=""

# 1. delete all jobs so that no job outlives the execd
if [ -n "$QM" ] && [ -n "$EX" ]; then
    JOBS=$(qstat -u '*' 2>/dev/null | awk 'NR>2{print $1}' | sort -u | tr '\n' ' ')
    if [ -n "${JOBS// /}" ]; then
        log "deleting jobs: $JOBS"
        qdel -f $JOBS >/dev/null 2>&1 || true
        end=$(( $(date +%s) + 20 ))
        while [ -n "$(qstat -u '*' 2>/dev/null)" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
        [ -z "$(qstat -u '*' 2>/dev/null)" ] || log "WARNING: jobs still listed: $(qstat -u '*' | awk 'NR>2{print $1}' | tr '\n' ' ')"
    fi
fi

# 2. execd (remember its shepherd children, by PID, first)
if [ -n "$EX" ]; then
    SHEPHERDS=""
    for c in $(ps -o pid= --ppid "$EX" 2>/dev/null); do
        [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = "$LIBEXEC/sge_shepherd" ] && SHEPHERDS="$SHEPHERDS $c"
    done
    stop_pid "$EX" sge_execd || RC=1
    for c in $SHEPHERDS; do
        if [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = "$LIBEXEC/sge_shepherd" ]; then
            log "killing leftover sge_shepherd pid $c"
            kill -KILL "$c" 2>/dev/null || true
        fi
    done
else
    log "sge_execd not running"
fi
rm -f $ESPOOL/*/execd.pid /var/run/gridengine/execd.pid

# 3. qmaster
if [ -n "$QM" ]; then
    stop_pid "$QM" sge_qmaster || RC=1
else
    log "sge_qmaster not running"
fi
rm -f $QSPOOL/qmaster.pid /var/run/gridengine/qmaster.pid

log "done in $(elapsed "$T_ALL")s (rc=$RC)"
exit $RC
