#!/bin/bash
# A corral batch job on the fake batch scheduler: 3 job(s) per array task, listed in
# the bundle files of /home/ann/runs/it's 100%/fakebatch/7
# Each job's output goes to stdout/stderr in its own job directory; this batch job's own
# output goes to fakebatch-<array index>.out here (arrays count from 1, a lone job is 0).
export CORRAL_BATCH_JOB_ID_VAR=FAKEBATCH_JOBID CORRAL_ARRAY_JOB_ID_VAR=FAKEBATCH_JOBID \
    CORRAL_ARRAY_INDEX_VAR=FAKEBATCH_ARRAY_INDEX CORRAL_RESTART_COUNT_VAR=FAKEBATCH_RESTART_COUNT \
    CORRAL_FAILED_EXIT_STATUS=1
exec >>'/home/ann/runs/it'"'"'s 100%/fakebatch/7'/"fakebatch-${FAKEBATCH_ARRAY_INDEX:-0}.out" 2>&1
set -e
trap 'echo "corral: a setup line failed (exit status $?); the job did not start" >&2' ERR
module load python/3.11
export OMP_NUM_THREADS=1
trap - ERR
set +e
exec '/opt/my python/bin/python3' -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; from corral.runtime.batch import main; main()' '/home/ann/runs/it'"'"'s 100%/fakebatch/7'/"${!CORRAL_ARRAY_INDEX_VAR:-0}".json
