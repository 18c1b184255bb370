#!/bin/bash
# A corral batch job for OpenPBS / PBS Pro: 3 job(s) per array task, listed in the
# bundle files of /home/ann/runs/it's 100%/pbs/7
# Each job's output goes to stdout/stderr in its own job directory; this batch job's
# own output (setup errors, the runtime's messages) goes to pbs-<array index>.out here.
exec >>'/home/ann/runs/it'"'"'s 100%/pbs/7'/"pbs-${PBS_ARRAY_INDEX:-0}.out" 2>&1
# corral's runtime reads PBS's variables through these names (PBS has no restart count:
# a lone job goes with -r n; PBS Pro wants arrays rerunnable), and ends with the failure
# status when a job failed, so that afterok holds back the job's dependents.
export CORRAL_BATCH_JOB_ID_VAR=PBS_JOBID CORRAL_ARRAY_JOB_ID_VAR=PBS_ARRAY_ID \
    CORRAL_ARRAY_INDEX_VAR=PBS_ARRAY_INDEX CORRAL_RESTART_COUNT_VAR= \
    CORRAL_FAILED_EXIT_STATUS=1
set -e
trap 'echo "corral: a setup line failed (exit status $?); the job did not start" >&2' ERR
module load python/3.11
export OMP_NUM_THREADS=1
trap - ERR
set +e
exec '/opt/my python/bin/python3' -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; from corral.runtime.batch import main; main()' '/home/ann/runs/it'"'"'s 100%/pbs/7'/"${!CORRAL_ARRAY_INDEX_VAR:-0}".json
