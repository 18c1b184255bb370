"""The files a batch job is made of, and what the base reads back from them.

Per corral job, in its job directory: ``task`` (what to run, written here),
``started``, ``result``, ``stdout`` and ``stderr`` (written by
:mod:`corral.runtime.batch`). Per submission, in a numbered directory under
``<run dir>/<scheduler name>/``: ``job.sh`` (rendered from the scheduler's
template), one bundle file ``<array index>.json`` per array task, and the
script's own log ``<scheduler name>-<array index>.out``.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shlex
import string
import sys
from collections.abc import Sequence
from pathlib import Path

from corral.backends.base import Submission
from corral.backends.batch.scheduler import BatchScheduler, SubmitRequest
from corral.runtime.batch import CANCELLED_MARK, RESULT_FILE, STARTED_FILE, TASK_FILE

__all__ = ["write_task", "write_bundle", "new_directory", "render_script", "script_for", "log_path",
           "read_started", "started_by_runtime", "start_time", "end_time", "live_files",
           "batch_log_of", "batch_log_tail", "printable", "jobs_of_submission", "SCRIPT_FILE"]

#: The batch script of a submission, in its numbered directory.
SCRIPT_FILE = "job.sh"
_TAIL_LINES = 3
#: The key of the task file that says where its batch job logs, for a later driver.
_LOG_KEY = "batch_log"


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def new_directory(base: Path, numbers: itertools.count) -> Path:
    """A fresh directory for one submission: numbered on from what earlier
    drivers of the same run directory left."""
    while True:
        directory = base / str(next(numbers))
        try:
            directory.mkdir(mode=0o700)
            return directory
        except FileExistsError:
            continue


def log_path(directory: Path, scheduler_name: str, index: int) -> str:
    """Where the batch script of array task *index* logs (the template's contract)."""
    return os.fspath(directory / f"{scheduler_name}-{index}.out")


def write_task(submission: Submission, batch_log: str) -> None:
    """Write what the runtime runs for *submission*, clearing an earlier attempt's files."""
    jobdir = os.fspath(submission.jobdir)
    os.makedirs(jobdir, mode=0o700, exist_ok=True)
    for stale in (STARTED_FILE, RESULT_FILE, "stdout", "stderr"):  # an earlier attempt's
        try:
            os.unlink(os.path.join(jobdir, stale))
        except FileNotFoundError:
            pass
    # A dependency still running here: the runtime reads its result file
    # (job directories are siblings in the run directory).
    upstream = [entry if isinstance(entry, bytes)
                else os.path.join(os.path.dirname(jobdir), str(entry))
                for entry in submission.upstream]
    task = {"job_id": submission.job_id, "argv": list(submission.argv),
            "payload": submission.call, "upstream": upstream, "env": list(submission.env),
            "cwd": submission.cwd,
            # The runtime enforces the walltime to the second; the scheduler's
            # limit (maybe in whole minutes) is the backstop.
            "walltime_s": submission.resources.walltime_s,
            _LOG_KEY: batch_log}
    with open(os.path.join(jobdir, TASK_FILE), "wb") as handle:
        pickle.dump(task, handle, pickle.HIGHEST_PROTOCOL)


def write_bundle(directory: Path, index: int, jobdirs: Sequence[str],
                 time_limit_s: float | None) -> None:
    """The bundle file of array task *index*: its jobs, in the order they run,
    and the driver's directory, where those without a ``cwd`` run as they do
    locally (a scheduler starts a batch job in its own choice of directory:
    PBS in ``$HOME``, Grid Engine where corral's ``-wd`` says; fyrd review)."""
    try:
        home: str | None = os.getcwd()
    except OSError:  # deleted under the driver: they run where the scheduler starts them
        home = None  # (re-attack review: the submit failed)
    bundle = {"jobdirs": list(jobdirs), "time_limit_s": time_limit_s, "sys_path": sys.path,
              "home": home}
    (directory / f"{index}.json").write_text(json.dumps(bundle))


#: The most of a bundle file :func:`jobs_of_submission` reads.
_BUNDLE_MOST = 4 << 20


def jobs_of_submission(directory: str) -> set[str] | None:
    """The jobs (their directories' names) a submission's bundle files list, read
    as JSON only, without following links or opening anything but plain files
    (``clean`` reads runs it may have been handed: a FIFO would hang it); None
    when *directory* holds no submission (no :data:`SCRIPT_FILE`) or one that
    cannot be read so."""
    try:
        with os.scandir(directory) as scanned:
            entries = {entry.name: entry for entry in scanned}
    except OSError:
        return None
    script = entries.get(SCRIPT_FILE)
    if script is None or not script.is_file(follow_symlinks=False):
        return None
    jobs: set[str] = set()
    for name, entry in entries.items():
        if not name.endswith(".json"):
            continue
        if not entry.is_file(follow_symlinks=False):
            return None
        try:
            with open(entry.path, "rb") as handle:
                listed = json.loads(handle.read(_BUNDLE_MOST)).get("jobdirs")
        except (OSError, ValueError, AttributeError, RecursionError):
            return None
        if not isinstance(listed, list) or not all(isinstance(path, str) for path in listed):
            return None
        jobs.update(os.path.basename(os.path.normpath(path)) for path in listed)
    return jobs or None


#: How every batch script ends, whatever its scheduler: the user's setup lines (a
#: failing one stops the job, saying so), then corral's runtime on this array
#: task's bundle file, its index read through the name the template exported.
RUN_CORRAL = """\
set -e
trap 'echo "corral: a setup line failed (exit status $$?); the job did not start" >&2' ERR
${setup}
trap - ERR
set +e
exec ${python} -c 'import json, sys; sys.path[:0] = json.load(open(sys.argv[1]))["sys_path"]; \
from corral.runtime.batch import main; main()' ${bundle_dir}/"$${!CORRAL_ARRAY_INDEX_VAR:-0}".json
"""


def render_script(template: str, *, directory: Path, tasks: int, setup: Sequence[str],
                  python: str, failed_exit_status: int) -> str:
    """The batch script from a scheduler's *template* (see
    :mod:`corral.backends.batch.scheduler` for the names it may use), its
    ``${run_corral}`` being :data:`RUN_CORRAL`. Every value but the setup lines
    is quoted here, once."""
    values = dict(tasks=tasks, bundle_dir_comment=printable(os.fspath(directory)),
                  setup="\n".join(setup), python=shlex.quote(python),
                  bundle_dir=shlex.quote(os.fspath(directory)),
                  failed_exit_status=failed_exit_status)
    return string.Template(template).substitute(
        values, run_corral=string.Template(RUN_CORRAL).substitute(values).rstrip("\n"))


def script_for(scheduler: BatchScheduler, *, directory: Path, tasks: int,
               setup: Sequence[str], python: str,
               request: SubmitRequest | None = None) -> str:
    """The batch script of one submission (*request*) of *scheduler*, from its template."""
    return render_script(scheduler.script_template(request), directory=directory, tasks=tasks,
                         setup=setup, python=python,
                         failed_exit_status=scheduler.failed_exit_status)


def read_started(jobdir: str) -> bytes | None:
    try:
        with open(os.path.join(jobdir, STARTED_FILE), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def started_by_runtime(jobdir: str) -> bool:
    started = read_started(jobdir)
    return bool(started) and started != CANCELLED_MARK


def start_time(jobdir: str) -> float | None:
    """When the runtime took the job, from its ``started`` record."""
    try:
        return float(json.loads(read_started(jobdir) or b"{}").get("time"))
    except (ValueError, TypeError, AttributeError):
        return None


def end_time(jobdir: str) -> float | None:
    """When the runtime wrote the job's result (its file's time)."""
    try:
        return os.stat(os.path.join(jobdir, RESULT_FILE)).st_mtime
    except OSError:
        return None


def live_files(jobdir: str) -> tuple[str, str]:
    return os.path.join(jobdir, "stdout"), os.path.join(jobdir, "stderr")


def batch_log_of(jobdir: str) -> str:
    """The log of the batch script that runs the job, as its task file records
    it: a later driver that attaches to the job reads failures there too. ""
    when the task file is gone or older than this record."""
    try:
        with open(os.path.join(jobdir, TASK_FILE), "rb") as handle:
            task = pickle.load(handle)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError):
        return ""
    found = task.get(_LOG_KEY, "") if isinstance(task, dict) else ""
    return found if isinstance(found, str) else ""


def batch_log_tail(jobdir: str, batch_log: str) -> str:
    """The last lines of the batch script's log, for the reason of a job that
    left no result (a setup line that failed says so there), when the job's
    own stderr is empty: the job's error shows the last lines of that one
    (its reason once carried them too, so a failed job's error said them twice,
    and a command's reason differed from the local backend's: cold reviews)."""
    if not batch_log or _has_content(os.path.join(jobdir, "stderr")):
        return ""
    try:
        with open(batch_log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 2000))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    if not lines:
        return ""
    tail = " | ".join(line.strip() for line in lines[-_TAIL_LINES:])
    return f"; its batch job's log ends: {tail[-300:]}"


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False
