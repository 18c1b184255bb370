"""Scripts that drive a journaled run and then wait to be killed, for the tests
of ``test_journal_integrity``.

    python integrity_drivers.py open RUN        # open the run, print "opened", wait
    python integrity_drivers.py hold RUN LOG    # run one call, print its result, wait

Both wait on stdin, which the tests leave open, so that the test decides when
(and how) the driver dies; ``hold``'s call appends a line to LOG each time it runs.
"""

from __future__ import annotations

import sys

import corral
import journal_driver


def _open(run: str) -> None:
    """A second run of a script killed before it dispatched anything."""
    corral.Scheduler(cores=1, journal=run)
    print("opened", flush=True)
    sys.stdin.read()


def _hold(run: str, log: str) -> None:
    """A run whose call completed (and was journaled) while its driver lives on."""
    scheduler = corral.Scheduler(cores=1, journal=run)
    value = scheduler.submit(journal_driver.logged_square, log, 6).result(timeout=60)
    scheduler._flush_journal_now()  # the journal lags the Future by a few ms: the test reads it
    print(value, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    {"open": _open, "hold": _hold}[sys.argv[1]](*sys.argv[2:])
