#!/bin/bash
# A corral batch job: 3 job(s) per array task, listed in the bundle files of
# /home/ann/runs/it's 100%/sge/7
# SGE sets SGE_TASK_ID to "undefined" outside an array: such a job's index is 0.
case "${SGE_TASK_ID:-}" in
    '' | *[!0-9]*) CORRAL_SGE_TASK=0 ;;
    *) CORRAL_SGE_TASK=$SGE_TASK_ID ;;
esac
# Each job's output goes to stdout/stderr in its own job directory; this batch job's
# own output (setup errors, the runtime's messages) goes to sge-<array index>.out here.
exec >>'/home/ann/runs/it'"'"'s 100%/sge/7'/"sge-${CORRAL_SGE_TASK}.out" 2>&1
# corral's runtime reads SGE's variables through these names, and ends with exit
# status 100 when a job failed: SGE then holds the batch job in error (Eqw),
# which keeps its -hold_jid dependents from starting (any other status releases them).
# qdel kills and a suspend stops the job's process group, with no SIGTERM first: the
# runtime runs the job's commands in it, not in sessions of their own.
export CORRAL_SGE_TASK CORRAL_BATCH_JOB_ID_VAR=JOB_ID CORRAL_ARRAY_JOB_ID_VAR=JOB_ID \
    CORRAL_ARRAY_INDEX_VAR=CORRAL_SGE_TASK CORRAL_RESTART_COUNT_VAR=RESTARTED \
    CORRAL_FAILED_EXIT_STATUS=100 CORRAL_COMMANDS_IN_JOB_GROUP=1
set -e
trap 'echo "corral: a setup line failed (exit status $?); the job did not start" >&2' ERR
module load python/3.11
export OMP_NUM_THREADS=1
trap - ERR
set +e
exec '/opt/my python/bin/python3' -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; from corral.runtime.batch import main; main()' '/home/ann/runs/it'"'"'s 100%/sge/7'/"${!CORRAL_ARRAY_INDEX_VAR:-0}".json
