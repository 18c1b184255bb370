#!/bin/bash
# A corral batch job for Torque (or Slurm's Torque wrappers): 3 job(s) per array
# task, listed in the bundle files of /home/ann/runs/it's 100%/pbs/7
# Torque sets PBS_JOBID and PBS_ARRAYID; under Slurm's wrappers the job is a Slurm job and
# only SLURM_JOB_ID and SLURM_ARRAY_TASK_ID are set: read whichever is.
export CORRAL_TORQUE_JOB_ID="${PBS_JOBID:-${SLURM_JOB_ID:-}}" \
    CORRAL_TORQUE_ARRAY_INDEX="${PBS_ARRAYID:-${SLURM_ARRAY_TASK_ID:-}}"
# Each job's output goes to stdout/stderr in its own job directory; this batch job's
# own output (setup errors, the runtime's messages) goes to pbs-<array index>.out here.
exec >>'/home/ann/runs/it'"'"'s 100%/pbs/7'/"pbs-${CORRAL_TORQUE_ARRAY_INDEX:-0}.out" 2>&1
# corral's runtime reads these names (an array task's job id is already its own; no
# restart count: a lone job goes with -r n), and ends with the failure status when a job
# failed, so that afterok holds back the job's dependents.
export CORRAL_BATCH_JOB_ID_VAR=CORRAL_TORQUE_JOB_ID CORRAL_ARRAY_JOB_ID_VAR= \
    CORRAL_ARRAY_INDEX_VAR=CORRAL_TORQUE_ARRAY_INDEX CORRAL_RESTART_COUNT_VAR= \
    CORRAL_FAILED_EXIT_STATUS=1
set -e
trap 'echo "corral: a setup line failed (exit status $?); the job did not start" >&2' ERR
module load python/3.11
export OMP_NUM_THREADS=1
trap - ERR
set +e
exec '/opt/my python/bin/python3' -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; from corral.runtime.batch import main; main()' '/home/ann/runs/it'"'"'s 100%/pbs/7'/"${!CORRAL_ARRAY_INDEX_VAR:-0}".json
