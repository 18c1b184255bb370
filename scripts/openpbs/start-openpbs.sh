#!/bin/bash
# Copied from ../shared/openpbs/start-openpbs.sh (the recipe shared with this project).
# Start a one-node OpenPBS cluster (server + sched + comm + mom + PostgreSQL datastore) inside a
# private network namespace, plus client wrappers. Run as root. Re-runnable: if PBS already
# answers it only re-applies settings. Status goes to stderr; stdout is one line:
#   export PATH=<PBS_CLIENT_DIR>:$PATH          (so: eval "$(start-openpbs.sh)")
#
# Env:
#   PBS_NETNS       namespace name (default corral-pbs)
#   PBS_NS_IP       address put on the namespace's lo (default 10.200.0.1; must not be 127.x:
#                   PBS refuses loopback addresses for its own names)
#   PBS_HOSTALIAS   host name PBS uses (default pbshost), resolved via /etc/netns/<ns>/hosts
#   CORRAL_DIR      runtime dir (default /tmp/corral-openpbs): broker socket, pid, logs
#   PBS_CLIENT_DIR  wrapper dir (default $CORRAL_DIR/bin)
#   RESET=1         wipe PBS_HOME first -> fresh server, job ids from 0
#   PBS_ALLOW_ROOT=1  set acl_roots=root so root may submit jobs
#   START_TIMEOUT   seconds to wait for the node to become free (default 60)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PBS_EXEC=${PBS_EXEC:-/opt/pbs}
PBS_HOME=${PBS_HOME:-/var/spool/pbs}
NS=${PBS_NETNS:-corral-pbs}
IP=${PBS_NS_IP:-10.200.0.1}
ALIAS=${PBS_HOSTALIAS:-pbshost}
CORRAL_DIR=${CORRAL_DIR:-/tmp/corral-openpbs}
PBS_CLIENT_DIR=${PBS_CLIENT_DIR:-$CORRAL_DIR/bin}
START_TIMEOUT=${START_TIMEOUT:-60}
NSDIR=/etc/netns/$NS
NSX=(ip netns exec "$NS")
log() { echo "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
[ -x "$PBS_EXEC/bin/qsub" ] || { log "OpenPBS not installed in $PBS_EXEC (run build-openpbs.sh)"; exit 1; }
case $IP in 127.*) log "PBS_NS_IP must not be a loopback (127.x) address"; exit 1;; esac
T0=$(date +%s.%N)

# ---- namespace with lo up and a private non-loopback address on lo
[ -e "/run/netns/$NS" ] || ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" -4 addr show dev lo | grep -q " $IP/" || ip -n "$NS" addr add "$IP/32" dev lo

# ---- per-namespace /etc files. `ip netns exec` bind-mounts /etc/netns/<ns>/X over /etc/X for
# every X that already exists in /etc (hosts and pbs.conf here); /etc/hosts itself is not touched.
mkdir -p "$NSDIR"
{ grep -vw "$ALIAS" /etc/hosts || true; echo "$IP $ALIAS"; } > "$NSDIR/hosts"
NEWCONF="PBS_SERVER=$ALIAS
PBS_SERVER_HOST_NAME=$ALIAS
PBS_LEAF_NAME=$ALIAS
PBS_MOM_NODE_NAME=$ALIAS
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_EXEC=$PBS_EXEC
PBS_HOME=$PBS_HOME
PBS_CORE_LIMIT=unlimited
PBS_SCP=/usr/bin/scp"
# the bind mount needs a target: create /etc/pbs.conf only if there is none (pbs_postinstall
# normally made it); the host's copy is never read by the namespaced daemons or wrappers
[ -e /etc/pbs.conf ] || echo "$NEWCONF" > /etc/pbs.conf
running() { timeout 5 "${NSX[@]}" "$PBS_EXEC/bin/qstat" -B >/dev/null 2>&1; }
if [ "$(cat "$NSDIR/pbs.conf" 2>/dev/null)" != "$NEWCONF" ]; then
    if running; then log "note: pbs.conf changed while PBS is running; restarting"; "$HERE/stop-openpbs.sh" >&2; exec "$0" "$@"; fi
    echo "$NEWCONF" > "$NSDIR/pbs.conf"
fi
"${NSX[@]}" getent hosts "$ALIAS" | grep -q "^$IP " || { log "$ALIAS does not resolve to $IP inside $NS"; exit 1; }
[ "$("${NSX[@]}" cat /etc/pbs.conf)" = "$NEWCONF" ] || { log "/etc/pbs.conf is not bind-mounted from $NSDIR inside $NS"; exit 1; }

if [ "${RESET:-0}" = 1 ]; then
    if running; then KEEP_NETNS=1 "$HERE/stop-openpbs.sh" >&2 || true; fi
    rm -rf "$PBS_HOME"
    # job ids restart at 0 after a reset; a leftover /var/tmp/pbs.<id>.<host> owned by another
    # uid makes the mom refuse the job ("possible attempted security breach", -21, job held)
    rm -rf /var/tmp/pbs.*."$ALIAS"
fi
if [ ! -d "$PBS_HOME/server_priv" ]; then
    # creates PBS_HOME; pointed at the namespace's conf so its backups land in $NSDIR, not /etc
    # (only files named like ones in /etc may stay in $NSDIR: `ip netns exec` tries to bind all)
    mkdir -p "$CORRAL_DIR"
    PBS_CONF_FILE=$NSDIR/pbs.conf "$PBS_EXEC/libexec/pbs_postinstall" > "$CORRAL_DIR/postinstall.log" 2>&1 \
        || { cat "$CORRAL_DIR/postinstall.log" >&2; exit 1; }
    echo "$NEWCONF" > "$NSDIR/pbs.conf"
    rm -f "$NSDIR"/pbs.conf.pre.* "$NSDIR"/pbs.conf.23.*
fi
chmod 4755 "$PBS_EXEC/sbin/pbs_iff" "$PBS_EXEC/sbin/pbs_rcp"

# ---- mom config: deliver output with cp (the mom's own name is not $ALIAS, it would scp);
# poll often so walltime limits are enforced within seconds
MOMCFG=$PBS_HOME/mom_priv/config
for line in '$usecp *:/ /' '$min_check_poll 1' '$max_check_poll 2'; do
    grep -qxF "$line" "$MOMCFG" 2>/dev/null || echo "$line" >> "$MOMCFG"
done
# ---- job environment: PBS starts each job in its owner's login shell. A profile that runs
# `pyenv init` rehashes under a lock file, and a job killed mid-rehash (a cancel test) leaves
# the lock behind: every later login shell then waited 60 s for it, and every job with it.
# With no wait, a stale lock costs a skipped rehash and nothing else.
ENVFILE=$PBS_HOME/pbs_environment
grep -qxF 'PYENV_REHASH_TIMEOUT=0' "$ENVFILE" 2>/dev/null || echo 'PYENV_REHASH_TIMEOUT=0' >> "$ENVFILE"

# ---- daemons, all inside the namespace
mkdir -p "$CORRAL_DIR"
if running; then
    log "OpenPBS already running in $NS"
    kill -HUP "$(cat "$PBS_HOME/mom_priv/mom.lock" 2>/dev/null)" 2>/dev/null || true
else
    "${NSX[@]}" "$PBS_EXEC/libexec/pbs_init.d" start > "$CORRAL_DIR/pbs_start.log" 2>&1 \
        || { cat "$CORRAL_DIR/pbs_start.log" >&2; exit 1; }
fi
ok=0
for _ in $(seq 1 $((START_TIMEOUT * 2))); do
    if running && "${NSX[@]}" "$PBS_EXEC/bin/pbsnodes" "$ALIAS" 2>/dev/null | grep -qE '^ *state = (free|job-busy)'; then ok=1; break; fi
    sleep 0.5
done
[ $ok = 1 ] || { log "node $ALIAS not free after ${START_TIMEOUT}s"; "${NSX[@]}" "$PBS_EXEC/bin/pbsnodes" -a >&2 || true; tail -20 "$CORRAL_DIR/pbs_start.log" >&2; exit 1; }

QMGR=("${NSX[@]}" "$PBS_EXEC/bin/qmgr" -c)
"${QMGR[@]}" "set server job_history_enable = True"
"${QMGR[@]}" "set server job_history_duration = 24:00:00"
# (corral) PBS_NCPUS: CPU slots the node offers (more than real = more short jobs at once).
if [ -n "${PBS_NCPUS:-}" ]; then
    "${QMGR[@]}" "set node $ALIAS resources_available.ncpus = $PBS_NCPUS"
fi
if [ "${PBS_ALLOW_ROOT:-0}" = 1 ]; then "${QMGR[@]}" "set server acl_roots = root"
else "${QMGR[@]}" "unset server acl_roots" 2>/dev/null || true; fi

# ---- client broker (root, inside the namespace; serves normal users over a Unix socket)
[ "$(stat -c %u "$CORRAL_DIR")" = 0 ] || { log "$CORRAL_DIR is not owned by root; refusing"; exit 1; }
chmod 755 "$CORRAL_DIR"
install -m 755 "$HERE/pbs-ns-broker.py" "$CORRAL_DIR/pbs-ns-broker.py"
SOCK=$CORRAL_DIR/broker.sock
bpid=$(cat "$CORRAL_DIR/broker.pid" 2>/dev/null || true)
if ! { [ -n "$bpid" ] && grep -q pbs-ns-broker "/proc/$bpid/cmdline" 2>/dev/null && [ -S "$SOCK" ]; }; then
    setsid "${NSX[@]}" /usr/bin/python3 "$CORRAL_DIR/pbs-ns-broker.py" serve "$SOCK" "$PBS_EXEC/bin" \
        < /dev/null >> "$CORRAL_DIR/broker.log" 2>&1 &
    echo $! > "$CORRAL_DIR/broker.pid"
    for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
    [ -S "$SOCK" ] || { log "client broker did not start"; cat "$CORRAL_DIR/broker.log" >&2; exit 1; }
fi

# ---- client wrappers: root enters the namespace directly, everyone else goes via the broker
mkdir -p "$PBS_CLIENT_DIR"
for c in qsub qstat qdel qhold qrls qalter qmgr pbsnodes qsig tracejob qselect qrun qrerun qmove qmsg qorder qterm; do
    cat > "$PBS_CLIENT_DIR/$c.tmp" <<EOF
#!/bin/sh
# OpenPBS '$c' inside network namespace $NS (generated by start-openpbs.sh)
if [ "\$(id -u)" = 0 ] && [ -z "\${PBS_WRAPPER_VIA_BROKER:-}" ]; then
    exec ip netns exec $NS $PBS_EXEC/bin/$c "\$@"
fi
exec /usr/bin/python3 $CORRAL_DIR/pbs-ns-broker.py call $SOCK $c "\$@"
EOF
    chmod 755 "$PBS_CLIENT_DIR/$c.tmp"; mv -f "$PBS_CLIENT_DIR/$c.tmp" "$PBS_CLIENT_DIR/$c"
done

T1=$(date +%s.%N)
log "OpenPBS up in netns $NS: server=$ALIAS ($IP) node free; wrappers in $PBS_CLIENT_DIR; start took $(awk "BEGIN{printf \"%.1f\", $T1 - $T0}")s"
echo "export PATH=$PBS_CLIENT_DIR:\$PATH"
