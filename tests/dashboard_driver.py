"""A script that drives a run the dashboard tests watch: ``python dashboard_driver.py
RUN SCRATCH``. Each job waits for a file in SCRATCH, so the test decides when
things change:

* ``gate`` runs until ``open-gate`` exists;
* ``talker`` prints ``tick N`` ten times a second until ``stop-talking`` exists;
* ``later`` waits in the queue behind them (two cores), then ends at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import corral
import jobs

run, scratch = sys.argv[1], Path(sys.argv[2])
with corral.Scheduler(journal=run, cores=2) as scheduler:
    gate = scheduler.options(name="gate").submit(jobs.wait_for_file, str(scratch / "open-gate"))
    talker = scheduler.shell(
        f"i=0; while [ ! -e '{scratch}/stop-talking' ]; do i=$((i+1)); echo tick $i; "
        "sleep 0.1; done", name="talker")
    later = scheduler.options(name="later").submit(jobs.square, 4)
    corral.wait([gate, talker, later])
