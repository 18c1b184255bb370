"""What ``corral cancel``/``pause``/``resume`` sent straight to a cluster while
no driver ran: kept beside the journal, for ``corral status`` to say.

With no driver, nothing writes the journal: a job cancelled in Slurm from the
command line still read RUNNING "as last seen", with no sign a cancel had gone
out, and a ``corral pause`` after it held jobs that no longer existed. Each
such request is one JSON line in ``<run>/sent-without-driver.jsonl``; a line
holds for the cluster job it names (a later run's new submission of the job is
another cluster job, which the line does not describe).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from corral.journal.stored import StoredJob

__all__ = ["SentRequest", "note_sent", "sent_requests", "cancelled_without_driver", "SENT_FILE"]

SENT_FILE = "sent-without-driver.jsonl"


@dataclass(frozen=True)
class SentRequest:
    verb: str       # cancel, pause or resume
    backend: str    # the scheduler's title: "Slurm"
    native_id: str  # the cluster job it went to
    at: float       # when (epoch seconds)

    def describe(self) -> str:
        """The DETAIL of ``corral status`` for the job."""
        when = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"{self.verb} sent to {self.backend} at {when} (no driver)"


def note_sent(run_dir: Path, verb: str, backend: str, jobs: Iterable[StoredJob]) -> None:
    """Record that *verb* went to *backend* for *jobs*; a failure to write is
    no reason to fail the request, which was carried out."""
    at = time.time()
    lines = "".join(json.dumps({"job": str(job.id), "native": str(job.native_id),
                                "verb": verb, "backend": backend, "at": at}) + "\n"
                    for job in jobs)
    try:
        with open(run_dir / SENT_FILE, "a", encoding="utf-8") as record:
            record.write(lines)
    except OSError:
        pass


def sent_requests(run_dir: Path, jobs: Iterable[StoredJob]) -> dict[str, SentRequest]:
    """The last request sent for each of *jobs* (by id) to the cluster job it
    has now; none for a job resubmitted since. A damaged line is skipped."""
    try:
        text = (run_dir / SENT_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    native = {str(job.id): str(job.native_id) for job in jobs if job.native_id}
    found: dict[str, SentRequest] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            request = SentRequest(str(entry["verb"]), str(entry["backend"]),
                                  str(entry["native"]), float(entry["at"]))
            job_id = str(entry["job"])
        except (ValueError, KeyError, TypeError):
            continue
        if native.get(job_id) == request.native_id:
            found[job_id] = request
    return found


def cancelled_without_driver(run_dir: Path, jobs: list[StoredJob]) -> set[str]:
    """Those of *jobs* whose cluster job a ``corral cancel`` already went to."""
    return {job_id for job_id, request in sent_requests(run_dir, jobs).items()
            if request.verb == "cancel"}
