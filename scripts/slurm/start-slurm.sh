#!/usr/bin/env bash
# Start a private one-node Slurm cluster (Debian bookworm's Slurm 22.05) from scratch, as root,
# needing neither systemd nor cgroups. Everything (config, munge key+socket, state, logs, pid files)
# lives under $SLURM_ROOT; nothing under /etc is written and the system munged is not used.
#
#   SLURM_ROOT=/tmp/slurmtest/cluster   where everything lives (wiped state on every start)
#   SLURM_PORT_BASE=6817                slurmctld=BASE, slurmd=BASE+1, slurmdbd=BASE+2, mariadb=BASE+3
#   SLURM_ACCOUNTING=0                  1: also install+start mariadb and slurmdbd so `sacct` works
#   SLURM_CPUS=$(nproc)                 CPUs the node offers (more than real = more short jobs at once)
#   SLURM_MEM_ENFORCE=1                 1: jobacct_gather/linux + OverMemoryKill (polls RSS each 1 s,
#                                       kills a job over its --mem: FAILED, ExitCode 0:9); 0: none
#   SLURM_KILL_INVALID_DEPEND=1         1: an afterok child of a failed job is CANCELLED; 0: it pends
#                                       forever (Reason=DependencyNeverSatisfied), as on many clusters
#   SLURM_MIN_JOB_AGE=300               seconds a finished job stays visible to squeue/scontrol
#   SLURM_ENFORCE_PART_LIMITS=1         1: sbatch rejects what can never run; 0: it pends forever
#                                       (Reason=PartitionConfig), as on many clusters
#   SLURM_CGROUP=0                      1: proctrack/cgroup + task/cgroup on the cgroup v1 hierarchy
#                                       mounted here: real --mem limits (OUT_OF_MEMORY) and CPU pinning.
#                                       Needs /sys/fs/cgroup/memory (v1); ignores SLURM_MEM_ENFORCE.
#
# After it prints "slurm is up", point clients at it with:   export SLURM_CONF=$SLURM_ROOT/etc/slurm.conf
# (or: source $SLURM_ROOT/env.sh). Stop with stop-slurm.sh (same SLURM_ROOT).
set -euo pipefail
SLURM_ROOT=${SLURM_ROOT:-/tmp/slurmtest/cluster}
BASE=${SLURM_PORT_BASE:-6817}
ACCT=${SLURM_ACCOUNTING:-0}
MEMENF=${SLURM_MEM_ENFORCE:-1}
CGROUP=${SLURM_CGROUP:-0}
KID=${SLURM_KILL_INVALID_DEPEND:-1}
MINAGE=${SLURM_MIN_JOB_AGE:-300}
EPL=${SLURM_ENFORCE_PART_LIMITS:-1}
T_START=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }
[ "$(id -u)" = 0 ] || { echo "start-slurm.sh: needs root" >&2; exit 1; }

# 1. packages (only if missing). --no-install-recommends is enough: every plugin used below is in
#    slurm-wlm-basic-plugins. (Where a policy-rc.d allows it, postinst may also start the system
#    munged: harmless, this cluster uses its own.)
pkgs=()
command -v slurmctld >/dev/null || pkgs+=(slurmctld)
command -v slurmd    >/dev/null || pkgs+=(slurmd)
command -v sbatch    >/dev/null || pkgs+=(slurm-client)
command -v munged    >/dev/null || pkgs+=(munge)
if [ "$ACCT" = 1 ]; then
  command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
  command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing ${pkgs[*]} ..."
  # shellcheck source=../lib/apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
  apt_install --no-install-recommends "${pkgs[@]}"
  command -v slurmctld >/dev/null && command -v munged >/dev/null || { echo "install failed" >&2; exit 1; }
  echo "installed in $(since "$T_START") s"
fi

# 2. a clean tree. Stop a previous instance under the same root first.
case "$SLURM_ROOT" in /?*/?*) ;; *) echo "SLURM_ROOT must be an absolute path two levels deep" >&2; exit 1;; esac
if [ -d "$SLURM_ROOT" ] && [ ! -e "$SLURM_ROOT/.slurm-root" ] && [ -n "$(ls -A "$SLURM_ROOT")" ]; then
  echo "$SLURM_ROOT exists and was not made by this script: refusing to wipe it" >&2; exit 1
fi
SLURM_ROOT=$SLURM_ROOT "$(dirname "$0")/stop-slurm.sh" >/dev/null 2>&1 || true
rm -rf "$SLURM_ROOT"
mkdir -p "$SLURM_ROOT"/{etc,munge,state,spool,log,run,jobs}
touch "$SLURM_ROOT/.slurm-root"
chmod 755 "$SLURM_ROOT" "$SLURM_ROOT/munge"     # munged insists: socket dir executable by all

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $BASE $((BASE+1)) $((BASE+2)) $((BASE+3)); do
  if port_busy "$p"; then echo "port $p is busy (another Slurm?): set SLURM_PORT_BASE" >&2; exit 1; fi
done

# 3. a private munged (own key, own socket); slurm.conf's AuthInfo points every Slurm piece at it.
M=$SLURM_ROOT/munge
dd if=/dev/urandom bs=1 count=1024 of="$M/munge.key" 2>/dev/null
chmod 400 "$M/munge.key"
munged --socket="$M/munge.socket" --key-file="$M/munge.key" --pid-file="$M/munged.pid" \
       --log-file="$M/munged.log" --seed-file="$M/munged.seed"
cp "$M/munged.pid" "$SLURM_ROOT/run/munged.pid"

# 4. slurm.conf for this host
HOST=$(hostname -s)
# SLURM_CPUS may exceed the real core count (config_overrides keeps the node usable): Slurm starts
# jobs only on its ~1 s scheduling ticks, so more slots = more short jobs per second.
CPUS=${SLURM_CPUS:-$(nproc)}
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p'); MEM=$((MEM - 1024))
if [ "$ACCT" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=$((BASE+2))
# For the slurmdbd connection Slurm ignores AuthInfo: the munge socket goes here instead.
AccountingStoragePass=$M/munge.socket"
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none"
fi
PROCTRACK=proctrack/linuxproc; TASK=task/none
if [ "$CGROUP" = 1 ]; then
  [ -d /sys/fs/cgroup/memory ] || { echo "SLURM_CGROUP=1 needs the cgroup v1 memory controller" >&2; exit 1; }
  PROCTRACK=proctrack/cgroup; TASK=task/cgroup; MEMENF=0
  CORES=no; [ "$CPUS" -le "$(nproc)" ] && CORES=yes    # cannot pin to CPUs that do not exist
  printf 'CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nConstrainRAMSpace=yes\nConstrainSwapSpace=no\nConstrainCores=%s\n' \
    "$CORES" > "$SLURM_ROOT/etc/cgroup.conf"
fi
if [ "$MEMENF" = 1 ]; then
  GATHER="JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill"
else
  GATHER="JobAcctGatherType=jobacct_gather/none"
fi
cat > "$SLURM_ROOT/etc/slurm.conf" <<CONF
ClusterName=slurmtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$BASE
SlurmdPort=$((BASE+1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$M/munge.socket
StateSaveLocation=$SLURM_ROOT/state
SlurmdSpoolDir=$SLURM_ROOT/spool
SlurmctldPidFile=$SLURM_ROOT/run/slurmctld.pid
SlurmdPidFile=$SLURM_ROOT/run/slurmd.pid
SlurmctldLogFile=$SLURM_ROOT/log/slurmctld.log
SlurmdLogFile=$SLURM_ROOT/log/slurmd.log
ProctrackType=$PROCTRACK
TaskPlugin=$TASK
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,default_queue_depth=1000,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem reserves ALL node memory and jobs run one at a time.
DefMemPerCPU=256
# Reject at sbatch time what can never run (else it pends forever, Reason=PartitionConfig).
$( [ "$EPL" = 1 ] && echo EnforcePartLimits=ALL )
# kill_invalid_depend: a job whose afterok parent failed is cancelled (else it pends forever,
# Reason=DependencyNeverSatisfied). NB: afterok on a job id slurmctld no longer knows (purged after
# MinJobAge, or never existed) counts as satisfied: the child runs at once.
$( [ "$KID" = 1 ] && echo DependencyParameters=kill_invalid_depend )
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=$MINAGE
MaxJobCount=100000
MaxArraySize=10001
KillWait=5
InactiveLimit=0
$GATHER
$ACCT_CONF
# Final state + exit code of every finished job, one line each; also readable with: sacct -c
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_ROOT/log/jobcomp.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$SLURM_ROOT/etc/slurm.conf
echo "export SLURM_CONF=$SLURM_CONF" > "$SLURM_ROOT/env.sh"

# 5. optional accounting: mariadb (private datadir, TCP on 127.0.0.1) + slurmdbd
if [ "$ACCT" = 1 ]; then
  D=$SLURM_ROOT/db
  mkdir -p "$D"
  mariadb-install-db --user=root --datadir="$D/data" --auth-root-authentication-method=socket >"$D/install.log" 2>&1
  # (a plain background child would die with this shell's job: setsid detaches it)
  setsid mariadbd --no-defaults --user=root --datadir="$D/data" --socket="$D/mysqld.sock" \
    --port=$((BASE+3)) --bind-address=127.0.0.1 --pid-file="$SLURM_ROOT/run/mariadbd.pid" \
    --log-error="$SLURM_ROOT/log/mariadbd.log" --innodb-buffer-pool-size=64M --skip-log-bin \
    </dev/null >/dev/null 2>&1 &
  for i in $(seq 1 300); do mariadb --no-defaults -S "$D/mysqld.sock" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb --no-defaults -S "$D/mysqld.sock" -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > "$SLURM_ROOT/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$M/munge.socket
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$((BASE+2))
SlurmUser=root
PidFile=$SLURM_ROOT/run/slurmdbd.pid
LogFile=$SLURM_ROOT/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((BASE+3))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$SLURM_ROOT/etc/slurmdbd.conf"    # slurmdbd refuses a readable one
  slurmdbd                                      # finds slurmdbd.conf beside $SLURM_CONF
  for i in $(seq 1 300); do port_busy $((BASE+2)) && break; sleep 0.1; done
fi

# 6. the two Slurm daemons (they daemonize and write their pid files)
slurmctld
slurmd
for i in $(seq 1 600); do
  if [ "$(sinfo -h -n "$HOST" -o %T 2>/dev/null)" = idle ]; then
    echo "slurm is up after $(since "$T_START") s: export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
echo "slurm did not come up" >&2
tail -n 20 "$SLURM_ROOT"/log/*.log "$M/munged.log" >&2
exit 1
