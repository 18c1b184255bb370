#!/bin/bash
# A corral batch job: 3 job(s) per array element, listed in the bundle files of
# /home/ann/runs/it's 100%/lsf/7
# Each job's output goes to stdout/stderr in its own job directory; this batch job's
# own output (setup errors, the runtime's messages) goes to lsf-<array index>.out here.
exec >>'/home/ann/runs/it'"'"'s 100%/lsf/7'/"lsf-${LSB_JOBINDEX:-0}.out" 2>&1
# corral's runtime reads LSF's variables through these names (LSB_JOBINDEX: from 1 in
# an array, unset or 0 outside one; LSF keeps no restart count: jobs go out with -rn),
# and ends with the failure status when a job failed, so that done() holds back the
# job's dependents.
export CORRAL_BATCH_JOB_ID_VAR=LSB_JOBID CORRAL_ARRAY_JOB_ID_VAR=LSB_JOBID \
    CORRAL_ARRAY_INDEX_VAR=LSB_JOBINDEX CORRAL_RESTART_COUNT_VAR= \
    CORRAL_FAILED_EXIT_STATUS=1
set -e
trap 'echo "corral: a setup line failed (exit status $?); the job did not start" >&2' ERR
module load python/3.11
export OMP_NUM_THREADS=1
trap - ERR
set +e
exec '/opt/my python/bin/python3' -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; from corral.runtime.batch import main; main()' '/home/ann/runs/it'"'"'s 100%/lsf/7'/"${!CORRAL_ARRAY_INDEX_VAR:-0}".json
