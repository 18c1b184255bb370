"""A driver started in a hostile environment: its stdout or stderr closed, its
directory deleted, PYTHONINSPECT set, no room for threads, a job's output
file unreadable. Its jobs run, or fail saying why (attack review)."""

from __future__ import annotations

import json
import re
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import corral

import jobs

#: A driver that runs ``square`` over ``range(30)`` with the cores, journal and
#: cwd-ful extra jobs it is told, and writes what each job gave (its value,
#: or its error) as JSON to the file named first: its stdout may be closed.
DRIVER = """
import json, os, sys
import corral
sys.path.insert(0, {tests!r})
import jobs

out, cores, journal, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
if mode == "delete-cwd":
    os.rmdir(os.getcwd())  # as `cd gone; python driver.py & rm -rf gone` does
results = []
with corral.Scheduler(cores=cores, journal=journal) as sched:
    if mode == "talk":  # what each job wrote, too
        submitted = [sched.submit(jobs.talk, str(i)) for i in range(30)]
    else:
        submitted = [sched.submit(jobs.square, i) for i in range(30)]
    if mode == "delete-cwd":
        submitted.append(sched.options(cwd=os.path.dirname(out)).submit(os.getcwd))
        submitted.append(sched.shell("echo from a shell"))
    for job in submitted:
        try:
            value = job.result(timeout=60)
            results.append([value, job.stdout, job.stderr] if mode == "talk" else value)
        except Exception as error:
            results.append(f"{{type(error).__name__}}: {{error}}")
with open(out, "w") as file:
    json.dump(results, file)
"""


def _run_driver(tmp_path: Path, *, redirect: str = "", cores: int = 4, journal: bool = False,
                mode: str = "", cwd: Path | None = None,
                env: dict[str, str] | None = None) -> tuple[list, subprocess.CompletedProcess]:
    """Run :data:`DRIVER` in a process of its own, with *redirect* applied to
    its standard descriptors by a shell (``>&-`` closes its stdout); return
    what its jobs gave and the finished process."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "results.json"
    argv = [sys.executable, str(script), str(out), str(cores),
            str(tmp_path / "run") if journal else "", mode]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    done = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *argv], cwd=cwd,
                          capture_output=not redirect, text=True, timeout=120, env=environment)
    assert out.exists(), done.stderr
    return json.loads(out.read_text()), done


@pytest.mark.parametrize("redirect", [">&-", "2>&-", "<&- >&- 2>&-"])
@pytest.mark.parametrize("journal", [False, True], ids=["plain", "journaled"])
def test_a_driver_started_with_stdout_or_stderr_closed_loses_no_job(tmp_path, redirect, journal):
    # Each new worker could lose the race between its guard thread and its
    # spool (some of 30 jobs failed as "worker lost" in most runs), and the
    # first job of each worker that did not printed nowhere from Python.
    results, done = _run_driver(tmp_path, redirect=redirect, journal=journal, mode="talk")
    assert results == [[str(i), f"py-out {i}\nchild-out {i}\n", f"py-err {i}\nchild-err {i}\n"]
                       for i in range(30)]
    assert done.returncode == 0


OWN_FILE_ON_FD_1 = """
import os, sys, corral
data = open(sys.argv[1], "w")   # stdout is closed: the program's file takes fd 1
assert data.fileno() == 1
with corral.Scheduler(cores=1) as scheduler:
    scheduler.submit(abs, -1).result(timeout=60)
print("a print with no stdout")
data.write("the program's own line\\n")
data.close()
"""


def test_a_program_whose_own_file_took_fd_1_keeps_it_its_own(tmp_path):
    """Diff review: with stdout closed, a Scheduler made Python a stdout on
    fd 1, which was the program's own file: its prints went into that file."""
    own = tmp_path / "data.txt"
    done = subprocess.run([sys.executable, "-c", OWN_FILE_ON_FD_1, str(own)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=60, preexec_fn=lambda: os.close(1))
    assert done.returncode in (0, 1), done.stderr  # (print to no stdout: Python's own way)
    assert own.read_text() == "the program's own line\n"


def test_jobs_run_though_the_drivers_directory_was_deleted(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    results, done = _run_driver(tmp_path, cores=2, mode="delete-cwd", cwd=gone)
    # Calls need no directory; one given a cwd that exists runs there; a
    # command runs in the deleted directory, as it would from the driver.
    assert results == [*(i * i for i in range(30)), str(tmp_path), None], done.stderr
    assert done.returncode == 0, done.stderr


def test_pythoninspect_does_not_fail_a_journaled_run(tmp_path):
    results, done = _run_driver(tmp_path, cores=2, journal=True, env={"PYTHONINSPECT": "1"})
    assert results == [i * i for i in range(30)], done.stderr
    assert "JournalError" not in done.stderr and "SystemExit" not in done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode == 0


#: A driver whose workers cannot start a thread: a stack limit too large to
#: map is the default size of every new process's threads (the driver's own
#: are given small stacks first). RLIMIT_NPROC would do it too, but not as root.
NO_THREADS_DRIVER = """
import resource, sys, threading
import corral
sys.path.insert(0, {tests!r})
import jobs

threading.stack_size(1 << 20)
resource.setrlimit(resource.RLIMIT_STACK, ({stack}, resource.RLIM_INFINITY))
with corral.Scheduler(cores=1) as sched:
    job = sched.submit(jobs.square, 3)
    try:
        job.result(timeout=60)
    except corral.WorkerLost as error:
        print(error)
    print("reason:", job.record.reason)
"""

_HUGE_STACK = 1 << 45


def _threads_fail_under_a_huge_stack() -> bool:
    """Whether a new process cannot start a thread under :data:`_HUGE_STACK`
    (not where memory is overcommitted without limit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if hard != resource.RLIM_INFINITY and hard < _HUGE_STACK:
        return False
    code = (f"import resource, threading; resource.setrlimit(resource.RLIMIT_STACK, "
            f"({_HUGE_STACK}, resource.RLIM_INFINITY)); import subprocess, sys; "
            "sys.exit(subprocess.run([sys.executable, '-c', 'import threading; "
            "threading.Thread(target=int).start()'], capture_output=True).returncode)")
    return subprocess.run([sys.executable, "-c", code], timeout=60).returncode != 0


def test_a_worker_that_cannot_start_a_thread_says_so_in_its_jobs_error(tmp_path):
    if not _threads_fail_under_a_huge_stack():
        pytest.skip("threads start even under a huge stack limit here (memory overcommitted)")
    script = tmp_path / "driver.py"
    script.write_text(NO_THREADS_DRIVER.format(tests=str(Path(__file__).parent),
                                               stack=_HUGE_STACK))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "worker lost" in done.stdout
    assert "cannot start: RuntimeError: can't start new thread" in done.stdout, done.stdout
    assert "ulimit -u" in done.stdout
    assert "Traceback" not in done.stderr  # (not raw on the driver's terminal)
    reason = done.stdout.rpartition("reason: ")[2]
    assert reason.startswith("worker lost: the worker (pid ") and (
        "cannot start: RuntimeError" in reason), (
        "its reason says why, not 'worker lost: exited with code 1'")


def test_a_failed_jobs_unreadable_stderr_is_named_and_the_run_goes_on(scheduler):
    probe = scheduler.submit(jobs.noop)
    probe.result(timeout=30)
    run_dir = probe.jobdir.parent
    # The job puts a directory where its stderr file goes, then fails: its
    # error's last lines of stderr cannot be read.
    failing = scheduler.shell(f'mkdir -p "{run_dir}/$CORRAL_JOB_ID/stderr"; exit 3')
    with pytest.raises(corral.JobFailed) as raised:
        failing.result(timeout=30)
    message = str(raised.value)
    assert "exit code 3" in message
    assert f"(its stderr, {failing.jobdir}/stderr, cannot be read: Is a directory)" in message
    assert [scheduler.submit(jobs.square, i).result(timeout=30) for i in range(3)] == [0, 1, 4]



def test_a_run_whose_path_the_c_locale_cannot_say_keeps_its_log(tmp_path):
    """Re-attack review: under LC_ALL=C (UTF-8 mode off) a rerun of a run named
    with an 'é' said "cannot write .../corral.log (... surrogates not
    allowed)", and its log lost the lines from then on."""
    run = os.fsencode(tmp_path) + "/résumé".encode()
    script = "import sys, corral\nwith corral.Scheduler(cores=1, journal=sys.argv[1]) as s:\n" \
             "    s.submit(abs, -1).result(timeout=60)\n"
    c_locale = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
                "PYTHONCOERCECLOCALE": "0"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script, run], capture_output=True,
                              env=c_locale, timeout=60)
        assert done.returncode == 0, done.stderr
        assert b"cannot write" not in done.stderr, done.stderr
    assert b"resuming the run at" in (Path(os.fsdecode(run)) / "corral.log").read_bytes()


READ_ONLY = """
mount --bind "$PLACE" "$PLACE" && mount -o remount,bind,ro "$PLACE" || exit 9
"$PYTHON" -c 'import corral, sys; corral.Scheduler(journal=sys.argv[1])' "$PLACE/run" \
    2> "$PLACE/../python-said"
echo "python $?"
corral --run "$PLACE/run" submit true 2> "$PLACE/../corral-said"
echo "corral $?"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a read-only mount needs root (run "
                                              "the suite as root to cover it)")
def test_a_run_directory_on_a_read_only_mount_is_one_line_naming_it(tmp_path):
    """The driver raised a bare OSError from a chmod, with a traceback through
    corral's journal; ``corral submit`` said only "Read-only file system"
    (hostile-input review). Both now name the directory and what to do."""
    place = tmp_path / "place"
    (place / "run").mkdir(parents=True)
    (place / "run").chmod(0o755)  # (a directory corral would make private first)
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", READ_ONLY], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PLACE": os.fspath(place), "PYTHON": sys.executable,
                          "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"})
    assert done.stdout == "python 1\ncorral 3\n", done
    said = f"run directory '{place}/run' cannot be written: Read-only file system; choose one " \
           "this user can write in"
    assert (tmp_path / "python-said").read_text().splitlines()[-1] == f"ValueError: {said}"
    assert (tmp_path / "corral-said").read_text() == f"corral: error: {said}\n"


NO_INODES = """
mount -t tmpfs -o size=1m,nr_inodes=8 tmpfs "$PLACE" || exit 9
mkdir "$PLACE/run"
i=0; while touch "$PLACE/f$i" 2> /dev/null; do i=$((i+1)); done
"$PYTHON" -c 'import corral, sys; corral.Scheduler(journal=sys.argv[1])' "$PLACE/run" \\
    2> "$PLACE/../python-said"
echo "python $?"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a tmpfs mount needs root (run "
                                              "the suite as root to cover it)")
def test_a_run_directory_on_a_full_disk_is_told_to_make_room_not_to_mind_permissions(tmp_path):
    """Attack review: a disk out of room read as "choose one this user can
    write in", as if permissions were the trouble."""
    place = tmp_path / "place"
    place.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", NO_INODES], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PLACE": os.fspath(place), "PYTHON": sys.executable})
    assert done.stdout == "python 1\n", done
    assert (tmp_path / "python-said").read_text().splitlines()[-1] == (
        f"ValueError: run directory '{place}/run' cannot be written: No space left on device; "
        "make room there, or choose a run directory on another disk")


ODD_SYS_PATH_DRIVER = """
import pathlib, sys, corral
sys.path += [None, 3, b"/nowhere", pathlib.Path(sys.argv[2])]  # (imports pass over the first three)
def where():
    import placed_by_a_path
    return placed_by_a_path.WHERE
with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:
    print(scheduler.submit(where).result(timeout=60), scheduler.shell("true").result(timeout=60))
"""


def test_entries_of_sys_path_that_are_not_text_neither_fail_a_job_nor_the_journal(tmp_path):
    """Attack review: a None in sys.path failed every job's start (a worker got
    sys.path as its arguments), and a pathlib.Path failed a journaled run's start
    (its writer got sys.path as json)."""
    placed = tmp_path / "placed"
    placed.mkdir()
    (placed / "placed_by_a_path.py").write_text("WHERE = 'found'\n")
    (tmp_path / "driver.py").write_text(ODD_SYS_PATH_DRIVER)
    done = subprocess.run([sys.executable, "driver.py", str(tmp_path / "run"), str(placed)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "found None\n"), done.stderr


HUGE_SYS_PATH_DRIVER = """
import sys, corral
sys.path += ["/nowhere/" + "x" * 100 + str(number) for number in range(30_000)]
journal = {"journal": sys.argv[1]} if len(sys.argv) > 1 else {}
try:
    with corral.Scheduler(cores=1, **journal) as scheduler:
        scheduler.submit(print).result(timeout=60)
except Exception as error:
    print(type(error).__name__, error)
"""


@pytest.mark.parametrize("journaled", [False, True])
def test_a_sys_path_too_long_to_pass_to_a_process_is_named_as_the_cause(tmp_path, journaled):
    """Attack review: 30,000 entries failed every job with a bare "Argument list too long"."""
    (tmp_path / "driver.py").write_text(HUGE_SYS_PATH_DRIVER)
    done = subprocess.run([sys.executable, "driver.py", *[str(tmp_path / "run")] * journaled],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    what = "the journal's writer" if journaled else (
        r"the reaper \(which ends this run's jobs if this process dies\) with .*")
    assert re.search(rf"cannot start {what}: Argument list too long \(30,0\d\d arguments, "
                     r"3,\d{3},\d{3} bytes, most of them the entries of sys.path, which the "
                     r"process needs to import what this one can: fewer entries in sys.path "
                     r"or PYTHONPATH\)\n", done.stdout), done.stdout + done.stderr
