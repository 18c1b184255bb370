#!/bin/bash
# Copied from the shared recipe ../shared/sge/ (tested there, see its README.md and
# NOTE-for-projects.md for the traps it handles); started by tests/sge_cluster.py.
# sge-start.sh - bring up a REAL single-node Son of Grid Engine 8.1.9 cluster
# (Debian bookworm packages gridengine-{common,client,master,exec}) on this host.
#
#   * installs the packages non-interactively if they are missing (debconf preseeded)
#   * (re)initialises the cluster spool if the package postinst did not
#   * fixes the "client IP resolved to host name localhost" commlib error
#     with a host_aliases file (hostname -> 127.0.0.1 -> reverse "localhost")
#   * starts sge_qmaster and sge_execd (plain daemons, no systemd)
#   * idempotently configures: root may run jobs (min_uid/min_gid 0), fast
#     scheduler (1 s interval), accounting flushed at once (qacct works at once),
#     this host as admin/submit/exec host, PE "smp" and queue "all.q"
#     with $SGE_SLOTS (default 2) slots
#   * waits until the queue instance is up, then prints a summary.
#
# Safe to run repeatedly: running daemons are detected by PID file + /proc/PID/exe.
# Must run as root.  Stop with sge-stop.sh (kills by PID only).
#
# Env knobs: SGE_SLOTS (default 2), SGE_QUEUE (all.q), SGE_PE (smp),
#            SGE_START_TIMEOUT (seconds per wait, default 60).
set -euo pipefail

SGE_ROOT=/var/lib/gridengine
SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QSPOOL=$SPOOL/qmaster
ESPOOL=$SPOOL/execd
LIBEXEC=/usr/lib/gridengine
SLOTS=${SGE_SLOTS:-2}
QUEUE=${SGE_QUEUE:-all.q}
PE=${SGE_PE:-smp}
TIMEOUT=${SGE_START_TIMEOUT:-60}
HOST=$(hostname)
HOST=${HOST%%.*}
WORK=$(mktemp -d /tmp/sge-start.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

log() { echo "[sge-start $(date +%T)] $*"; }
die() { echo "[sge-start] ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

[ "$(id -u)" = 0 ] || die "must run as root"
T_ALL=$(now)

# ---------------------------------------------------------------- 1. install
if [ ! -x $LIBEXEC/sge_qmaster ] || [ ! -x $LIBEXEC/sge_execd ] || [ ! -e /usr/bin/qsub ]; then
    log "installing gridengine packages"
    T=$(now)
    cat > "$WORK/preseed" <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-common shared/gridenginemaster string $HOST
gridengine-client shared/gridengineconfig boolean true
gridengine-client shared/gridenginecell string $SGE_CELL
gridengine-client shared/gridenginemaster string $HOST
gridengine-master shared/gridengineconfig boolean true
gridengine-master shared/gridenginecell string $SGE_CELL
gridengine-master shared/gridenginemaster string $HOST
gridengine-exec shared/gridengineconfig boolean true
gridengine-exec shared/gridenginecell string $SGE_CELL
gridengine-exec shared/gridenginemaster string $HOST
EOF
    # shellcheck source=../lib/apt.sh
    source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
    apt_lock   # held across debconf and dpkg: both lock against other installs
    debconf-set-selections "$WORK/preseed"
    # Keep the packages' postinst from starting daemons through invoke-rc.d
    # (we start them ourselves below).  Only if no policy-rc.d exists already.
    TMP_POLICY=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        TMP_POLICY=1
    fi
    apt_install --no-install-recommends \
        gridengine-common gridengine-client gridengine-master gridengine-exec \
        || { [ $TMP_POLICY = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
    apt_unlock
    [ $TMP_POLICY = 1 ] && rm -f /usr/sbin/policy-rc.d
    log "installed in $(elapsed "$T")s: $(dpkg-query -W -f='${Version}' gridengine-master)"
fi

# ------------------------------------------------- 2. cluster spool / cell files
id sgeadmin >/dev/null 2>&1 || die "user sgeadmin missing (gridengine-common postinst did not run?)"
for d in $SGE_ROOT $SGE_ROOT/$SGE_CELL $COMMON $QSPOOL $QSPOOL/job_scripts $SPOOL/spooldb $ESPOOL; do
    mkdir -p "$d"; chown sgeadmin:sgeadmin "$d"; chmod 755 "$d"
done
if [ ! -e $COMMON/bootstrap ]; then
    install -m0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap $COMMON/bootstrap
fi
if [ ! -e $SPOOL/spooldb/sge ]; then
    log "initialising cluster spool (init_cluster)"
    su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" sgeadmin
fi

# Host name resolution.  On this VM `hostname` (vm) resolves to 127.0.0.1 whose
# reverse name is "localhost"; without an alias every client gets
#   "commlib error: access denied (client IP resolved to host name "localhost".
#    This is not identical to clients host name "vm")".
if ! getent hosts "$HOST" >/dev/null; then
    log "WARNING: $HOST does not resolve; adding '127.0.1.1 $HOST' to /etc/hosts"
    echo "127.0.1.1 $HOST" >> /etc/hosts
fi
ALIASES="localhost"
HOST_IP=$(getent ahostsv4 "$HOST" | awk 'NR==1{print $1}' || true)
REV=$( { [ -n "$HOST_IP" ] && getent hosts "$HOST_IP"; } | awk 'NR==1{print $2}' || true)
REV=${REV%%.*}
if [ -n "$REV" ] && [ "$REV" != "$HOST" ] && [ "$REV" != localhost ]; then ALIASES="$ALIASES $REV"; fi
NEW_ALIASES="$HOST $ALIASES"
ALIASES_CHANGED=0
if [ "$(cat $COMMON/host_aliases 2>/dev/null)" != "$NEW_ALIASES" ]; then
    echo "$NEW_ALIASES" > $COMMON/host_aliases
    ALIASES_CHANGED=1
fi
if [ "$(cat $COMMON/act_qmaster 2>/dev/null)" != "$HOST" ]; then
    echo "$HOST" > $COMMON/act_qmaster
fi
chown sgeadmin:sgeadmin $COMMON/host_aliases $COMMON/act_qmaster
chmod 644 $COMMON/host_aliases $COMMON/act_qmaster
mkdir -p /var/run/gridengine; chown sgeadmin:sgeadmin /var/run/gridengine

# ------------------------------------------------------------ helpers for PIDs
# pid_of_daemon NAME PIDFILE... -> prints PID if a live process with
# /proc/PID/exe == /usr/lib/gridengine/NAME is named in one of the pidfiles.
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

# qq COMMAND... : run quietly, show output only on failure
qq() { local out; out=$("$@" 2>&1) || { echo "$out" >&2; die "failed: $*"; }; }

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1; shift
    local end=$(( $(date +%s) + TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.1
    done
}

# ------------------------------------------------------------- 3. sge_qmaster
if P=$(qmaster_pid) && [ $ALIASES_CHANGED = 1 ]; then
    log "host_aliases changed: restarting sge_qmaster (pid $P)"
    kill -TERM "$P"
    end=$(( $(date +%s) + TIMEOUT )); while kill -0 "$P" 2>/dev/null; do [ "$(date +%s)" -lt "$end" ] || die "qmaster $P did not stop"; sleep 0.2; done
fi
if P=$(qmaster_pid); then
    log "sge_qmaster already running (pid $P)"
else
    T=$(now)
    rm -f $QSPOOL/qmaster.pid /var/run/gridengine/qmaster.pid
    /usr/sbin/sge_qmaster
    wait_for "sge_qmaster to answer" qconf -sh
    log "sge_qmaster started (pid $(qmaster_pid)) and answering in $(elapsed "$T")s"
fi

# ----------------------------------------------------------- 4. configuration
T=$(now)
# global configuration: allow root (uid 0) jobs, quick load reports, accounting
# written immediately so `qacct -j` sees a job as soon as it has finished.
# (qconf prints long values with "\" continuation lines: join them first)
join_cont() { awk '{ if (sub(/\\$/, "")) { buf = buf $0; next } print buf $0; buf = "" }'; }
qconf -sconf global | grep -v '^#' | join_cont \
  | sed -E 's/^(min_uid|min_gid)( +).*/\1\2 0/;
            s/^load_report_time( +).*/load_report_time\1 00:00:05/;
            s/^max_unheard( +).*/max_unheard\1 00:01:00/;
            s/^reporting_params( +).*/reporting_params\1 accounting=true reporting=false flush_time=00:00:01 joblog=true sharelog=00:00:00 accounting_flush_time=00:00:00/' \
  > "$WORK/global"
qq qconf -Mconf "$WORK/global"
# scheduler: run every second and right after submit/finish.
qconf -ssconf | join_cont \
  | sed -E 's/^schedule_interval( +).*/schedule_interval\1 0:0:1/;
            s/^flush_submit_sec( +).*/flush_submit_sec\1 1/;
            s/^flush_finish_sec( +).*/flush_finish_sec\1 1/;
            s/^job_load_adjustments( +).*/job_load_adjustments\1 NONE/;
            s/^load_adjustment_decay_time( +).*/load_adjustment_decay_time\1 0:0:0/' \
  > "$WORK/sched"
qq qconf -Msconf "$WORK/sched"
# hosts
ADMIN_HOSTS=$(qconf -sh 2>/dev/null || true)
grep -qx "$HOST" <<<"$ADMIN_HOSTS" || qq qconf -ah "$HOST"
SUBMIT_HOSTS=$(qconf -ss 2>/dev/null || true)
grep -qx "$HOST" <<<"$SUBMIT_HOSTS" || qq qconf -as "$HOST"
if ! qconf -se "$HOST" >/dev/null 2>&1; then
    printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' "$HOST" > "$WORK/exechost"
    qq qconf -Ae "$WORK/exechost"
fi
# parallel environment
cat > "$WORK/pe" <<EOF
pe_name            $PE
slots              $SLOTS
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
if qconf -sp "$PE" >/dev/null 2>&1; then qq qconf -Mp "$WORK/pe"; else qq qconf -Ap "$WORK/pe"; fi
# cluster queue
cat > "$WORK/queue" <<EOF
qname                 $QUEUE
hostlist              $HOST
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               $PE
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
if qconf -sq "$QUEUE" >/dev/null 2>&1; then qq qconf -Mq "$WORK/queue"; else qq qconf -Aq "$WORK/queue"; fi
log "configuration applied in $(elapsed "$T")s"

# ---------------------------------------------------------------- 5. sge_execd
if P=$(execd_pid); then
    log "sge_execd already running (pid $P)"
else
    T=$(now)
    rm -f $ESPOOL/*/execd.pid /var/run/gridengine/execd.pid
    /usr/sbin/sge_execd
    wait_for "sge_execd pid file" execd_pid
    log "sge_execd started (pid $(execd_pid)) in $(elapsed "$T")s"
fi

# queue instance up = load reported and no a/u/E/d/s state flags
queue_ready() {
    local line
    line=$(qstat -f -q "$QUEUE@$HOST" 2>/dev/null | grep "^$QUEUE@$HOST ") || return 1
    # fields: name qtype resv/used/tot load arch [states]
    set -- $line
    [ "$4" != "-NA-" ] && [ $# -eq 5 ]
}
T=$(now)
qmod -c "$QUEUE@$HOST" >/dev/null 2>&1 || true   # clear a stale error state
qmod -e "$QUEUE@$HOST" >/dev/null 2>&1 || true   # clear a stale disabled state
wait_for "queue instance $QUEUE@$HOST to come up" queue_ready
log "queue $QUEUE@$HOST up in $(elapsed "$T")s"

log "cluster ready in $(elapsed "$T_ALL")s total (qmaster pid $(qmaster_pid), execd pid $(execd_pid))"
qstat -f
