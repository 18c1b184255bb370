#!/bin/bash
#PBS -l ncpus=4
#PBS -l mem=1500
#PBS -l walltime=91
#PBS -l ngpus=1
#PBS -N 'it'"'"'s $HOME?; rm -rf ~'
# A corral batch job on fakeq (a scheduler described in the settings' [schedulers.fakeq]):
# 3 job(s) per array task, listed in the bundle files of
# /home/ann/runs/it's 100%/fakeq/7
# Each job's output goes to stdout/stderr in its own job directory; this batch job's own
# output goes to fakeq-<array index>.out here (a job that is not an array: 0).
# corral's runtime reads the scheduler's variables through these names, and ends with the
# failure status when a job failed, so that the scheduler holds back its dependents.
export CORRAL_BATCH_JOB_ID_VAR=FAKEBATCH_JOBID CORRAL_ARRAY_JOB_ID_VAR=FAKEBATCH_JOBID \
    CORRAL_ARRAY_INDEX_VAR=FAKEBATCH_ARRAY_INDEX CORRAL_RESTART_COUNT_VAR=CORRAL_NOT_SET_BY_THE_SCHEDULER \
    CORRAL_FAILED_EXIT_STATUS=1 CORRAL_COMMANDS_IN_JOB_GROUP=0
exec >>'/home/ann/runs/it'"'"'s 100%/fakeq/7'/"fakeq-${FAKEBATCH_ARRAY_INDEX:-0}.out" 2>&1
set -e
trap 'echo "corral: a setup line failed (exit status $?); the job did not start" >&2' ERR
module load python/3.11
trap - ERR
set +e
exec '/opt/my python/bin/python3' -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; from corral.runtime.batch import main; main()' '/home/ann/runs/it'"'"'s 100%/fakeq/7'/"${!CORRAL_ARRAY_INDEX_VAR:-0}".json
