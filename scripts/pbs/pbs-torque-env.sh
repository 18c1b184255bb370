#!/usr/bin/env bash
# Copied from ../shared/pbs/pbs-torque-env.sh (the recipe shared with this project); apt waits for its lock.
# PBS/Torque commands (qsub, qstat, qdel, qhold, qrls, qalter, pbsnodes) on top of a
# running Slurm: Slurm's own Torque compatibility wrappers (Debian package
# slurm-wlm-torque), unpacked into a private directory instead of installed, because
# the package conflicts with gridengine-client (both ship /usr/bin/qsub).
#
#   PBS_TORQUE_ROOT=/tmp/pbs-torque ./pbs-torque-env.sh     # prints: export PATH=...
#
# Then, with SLURM_CONF pointing at a running cluster (../slurm/start-slurm.sh):
#   eval "$(./pbs-torque-env.sh)"; qsub job.sh; qstat -f ID; qdel ID
# What works (checked on Debian 12, Slurm 22.05): #PBS -N / -l nodes=1:ppn=N,mem=..,
# walltime=.. directives, qsub -t 0-2 (arrays; SLURM_ARRAY_TASK_ID is set, PBS_ARRAYID
# is not), -W depend=afterok:ID, -h (held) + qrls, qdel, qstat and qstat -f in Torque's
# format (job_state Q/R/C). Output goes to NAME.oID / NAME.eID in the submit directory.
set -euo pipefail
ROOT=${PBS_TORQUE_ROOT:-${TMPDIR:-/tmp}/corral-pbs-torque}
BIN=$ROOT/usr/bin
# The wrappers' Perl modules are checked on every call, not only when the wrappers are
# unpacked: wrappers kept in /tmp outlive a removed libslurm-perl ("Can't locate Slurm.pm").
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
need=()
dpkg -s libslurm-perl >/dev/null 2>&1 || need+=(libslurm-perl)
dpkg -s libslurmdb-perl >/dev/null 2>&1 || need+=(libslurmdb-perl)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}" >&2
fi
if [ ! -x "$BIN/qsub" ]; then
  work=$(mktemp -d)
  (cd "$work" && { apt-get download slurm-wlm-torque >/dev/null 2>&1 || { apt_lock; _corral_apt_get update -qq || true; apt_unlock; apt-get download slurm-wlm-torque >/dev/null; }; })
  mkdir -p "$ROOT"
  dpkg -x "$work"/slurm-wlm-torque_*.deb "$ROOT"
  rm -rf "$work"
fi
# The wrappers call sbatch, squeue, scancel... from their own directory.
for c in sbatch squeue scancel scontrol sacct srun salloc sinfo; do
  [ -e "$BIN/$c" ] || ln -s "$(command -v $c)" "$BIN/$c"
done
echo "export PATH=$BIN:\$PATH"
