"""Functions that tests run as jobs. They live in a module of their own so that
workers import them by reference, as they would a user's library code."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import corral


class CustomError(Exception):
    """A user's own exception type, to show it comes back as itself."""


class UnpicklableError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.handle = threading.Lock()  # a lock cannot be pickled (and holds no descriptor)

    def __reduce__(self):
        raise TypeError("this error refuses to be pickled")


def write_atomically(path: str, text: str) -> None:
    """Tests wait for the file to exist and then read it: it must never be seen half-written."""
    temporary = f"{path}.partial"
    Path(temporary).write_text(text)
    os.replace(temporary, path)


def noop() -> None:
    return None


def square(x: int) -> int:
    return x * x


def add(*values: int) -> int:
    return sum(values)


def total(items: list[int]) -> int:
    return sum(items)


def identity(value):
    return value


def run_a_job_of_its_own(value):
    """A job that makes a Scheduler as it runs (not as its module is imported)."""
    with corral.Scheduler(cores=1) as inner:
        return inner.submit(identity, value).result(timeout=60)


def raise_custom(message: str) -> None:
    raise CustomError(message)


class CodedError(Exception):
    """Unpickled as pickle does it, ``CodedError(message)`` would fail: its
    class takes two arguments and gives one to Exception."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeywordError(Exception):
    def __init__(self, *, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def raise_coded(code: int, message: str) -> None:
    raise CodedError(code, message)


def raise_keyword(reason: str) -> None:
    raise KeywordError(reason=reason)


def raise_unpicklable() -> None:
    raise UnpicklableError("cannot travel")


def return_unpicklable():
    import threading

    return threading.Lock()


def talk(text: str) -> str:
    """Write to stdout and stderr from Python and from a child process."""
    print(f"py-out {text}")
    print(f"py-err {text}", file=sys.stderr)
    subprocess.run(["sh", "-c", f"echo child-out {text}; echo child-err {text} >&2"], check=True)
    return text


def wait_for_file(path: str, value=None, say: str | None = None, limit: float = 120.0):
    """Block until *path* exists: the test decides when this job may end (at most
    *limit* s, so that a failed test frees the job's slot)."""
    if say is not None:
        print(say, flush=True)
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def say_then(text: str, then: str) -> None:
    """Write a line to stdout and one to stderr, then die (``"exit"``) or wait
    to be killed (``"wait"``: its timeout, a cancel)."""
    print(f"out {text}", flush=True)
    print(f"err {text}", file=sys.stderr, flush=True)
    if then == "exit":
        os._exit(3)
    time.sleep(120)


def print_bytes(count: int) -> None:
    sys.stdout.write("x" * count)


def report_environment(*names: str) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names} | {"cwd": os.getcwd()}


def command_line() -> list[str]:
    return list(sys.argv)


def die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    raise ValueError(how)


def write_pid_and_wait(pidfile: str, release: str) -> None:
    write_atomically(pidfile, str(os.getpid()))
    wait_for_file(release)


def spawn_tree_and_wait(pidfile: str) -> None:
    """Start a child and a grandchild (one of them in its own session), note
    their pids, then wait forever: a timeout or cancel must kill them all."""
    child = subprocess.Popen(["sleep", "300"])
    shell = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE,
                             text=True)
    grandchild = shell.stdout.readline().strip()
    escaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
    write_atomically(pidfile, f"{os.getpid()} {child.pid} {shell.pid} {grandchild} {escaped.pid}")
    while True:
        time.sleep(0.05)


def leave_background_process(pidfile: str) -> str:
    child = subprocess.Popen(["sleep", "300"])
    write_atomically(pidfile, str(child.pid))
    return "done"


def pool_squares(start_method: str) -> tuple[list[int], str]:
    """Squares through a ``multiprocessing`` pool of *start_method*, and what
    the job wrote on its stderr meanwhile."""
    import contextlib
    import io
    import multiprocessing

    err = io.StringIO()
    with contextlib.redirect_stderr(err), multiprocessing.get_context(start_method).Pool(2) as pool:
        return pool.map(square, range(4)), err.getvalue()


def process_then_end_own_children(start_method: str) -> int | None:
    """Run a no-op in a ``multiprocessing.Process``, then SIGKILL what the job has
    under it (the fork server, the resource tracker) and reap them, as a tidy
    job may; its exit code."""
    import multiprocessing

    import psutil

    process = multiprocessing.get_context(start_method).Process(target=noop)
    process.start()
    process.join()
    children = psutil.Process().children()
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=30)
    return process.exitcode


def leave_shared_memory(start_method: str) -> str:
    """Make a block of shared memory and leave it (closed, not unlinked), after
    starting a process of *start_method*, as a job using a pool may; its name."""
    import multiprocessing
    from multiprocessing import shared_memory

    process = multiprocessing.get_context(start_method).Process(target=noop)
    process.start()
    process.join()
    block = shared_memory.SharedMemory(create=True, size=16)
    block.close()
    return block.name


def count_attempts(counter: str, fail_times: int) -> int:
    """Fail the first *fail_times* calls, counting calls in a file."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= fail_times:
        raise RuntimeError(f"failing on purpose, call {calls}")
    return calls


def stop_when_asked(marker: str, started: str) -> str:
    Path(started).touch()
    while not corral.abort_requested():
        time.sleep(0.01)
    Path(marker).write_text("stopped cleanly")
    return "stopped"


def mark_if_aborted_within(marker: str, seconds: float) -> str:
    """Poll the abort flag for *seconds*; on an abort write *marker* and return
    "aborted", else return "ran on"."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if corral.abort_requested():
            Path(marker).write_text("aborted")
            return "aborted"
        time.sleep(0.01)
    return "ran on"


def whole_unless_aborted(release: str) -> str:
    """Run until *release* exists ("whole"), or stop early on an abort and
    return that partial work ("stopped early"), as a map's chunk does."""
    while not os.path.exists(release):
        if corral.abort_requested():
            return "stopped early"
        time.sleep(0.01)
    return "whole"


def stop_as_if_aborted() -> str:
    """Return partial work with the abort flag set, as a job an abort reached does."""
    from corral.runtime import abort

    abort.request()
    return "stopped early"


def ignore_abort(started: str) -> None:
    Path(started).touch()
    while True:
        time.sleep(0.05)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def run_code(code: str):
    """Run *code* and return the variable ``result`` it sets."""
    namespace: dict = {}
    exec(code, namespace)
    return namespace["result"]


def hold_the_gil_after_a_child(pidfile: str) -> None:
    """Start a child in its own session, note both pids, then run C code that never
    lets another thread of this process run (a worker's guard thread included)."""
    child = subprocess.Popen(["sleep", "4311"], start_new_session=True)
    write_atomically(pidfile, f"{os.getpid()} {child.pid}")
    sum(range(10 ** 13))


def busy_in_c(iterations: int, started: str | None = None) -> int:
    """Sum *iterations* numbers in C code that holds the GIL throughout: none of
    the worker's other threads (its doorbell, its lookout) runs meanwhile. 0 is
    a job of microseconds, so that the driver learns the kind is short. With
    *started*, that file is made first."""
    if started is not None:
        Path(started).touch()
    return sum(range(iterations))


def hold_gil(iterations: int, started: str | None = None, ended: str | None = None) -> int:
    """:func:`busy_in_c`, writing this worker's pid to *started* first and
    touching *ended* last, so a test sees whether the job began and ended."""
    if started is not None:
        write_atomically(started, str(os.getpid()))
    total = sum(range(iterations))
    if ended is not None:
        Path(ended).touch()
    return total


def busy_then_note(iterations: int, path: str, tag: str) -> int:
    """:func:`busy_in_c`, then a line *tag* added to *path*: each run leaves one."""
    total = sum(range(iterations))
    append_line(path, tag)
    return total


def fail_first_try(number: int, marks: str) -> int:
    """Raise on the first try of each *number* (a file in *marks* remembers it);
    return *number* on the next."""
    mark = Path(marks, str(number))
    if not mark.exists():
        mark.touch()
        raise RuntimeError(f"first try of {number}")
    return number


def note_and_fail_first_try(log: str, number: int, marks: str) -> int:
    """Note *number* as a line of *log* (one per try), then :func:`fail_first_try`."""
    append_line(log, str(number))
    return fail_first_try(number, marks)


def fork_and_leave_the_child(how: str, log: str | None = None) -> tuple[str, int, int]:
    """Fork; the child ends as *how* says ("return", "raise", "exit": not with
    os._exit, as it should); the parent waits for it and returns ``("parent",
    its pid, the child's exit status)``. With *log*, each process that returns
    notes its pid there."""
    child = os.fork()
    if child == 0:
        if log is not None:
            append_line(log, f"child {os.getpid()}")
        if how == "raise":
            raise ValueError("the child raised")
        if how == "exit":
            sys.exit(0)
        return ("child", os.getpid(), 0)
    _, status = os.waitpid(child, 0)
    if log is not None:
        append_line(log, f"parent {os.getpid()}")
    return ("parent", os.getpid(), os.waitstatus_to_exitcode(status))


def fork_on_zero_and_note_pid(log: str, x: int) -> int:
    """Note which process ran call *x*; call 0 forks first, and its child
    returns (see :func:`fork_and_leave_the_child`)."""
    if x == 0:
        fork_and_leave_the_child("return")
    append_line(log, f"{x} {os.getpid()}")
    return x


def touch(path: str) -> None:
    Path(path).touch()


def append_line(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def note_run_when_released(release: str, log: str, value: int) -> int:
    """Wait for *release*, note this run as a line of *log*, return *value*."""
    wait_for_file(release)
    append_line(log, str(value))
    return value


def note_run_then_wait(log: str, release: str, value: int) -> int:
    """Note this run as a line of *log* at once, then wait for *release*; return *value*."""
    append_line(log, str(value))
    wait_for_file(release)
    return value


def run_shell(command: str) -> str:
    """Run *command* with /bin/sh from within a call job; return what it printed."""
    import subprocess

    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                          check=False).stdout


def square_unless_negative(x: int) -> int:
    """x squared; a negative x raises ValueError naming it."""
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


def note_and_square(log: str, x: int) -> int:
    """Note *x* as a line of *log* (one line per run of the call), then
    :func:`square_unless_negative` it."""
    append_line(log, str(x))
    return square_unless_negative(x)


def raise_unpicklable_on(x: int) -> int:
    """Raise an exception that cannot be pickled when *x* is negative; else return x."""
    if x < 0:
        raise_unpicklable()
    return x


def exit_on(x: int) -> int:
    """Raise SystemExit(7) when *x* is 2; else return x."""
    if x == 2:
        raise SystemExit(7)
    return x


def lock_on(x: int):
    """A lock (which cannot be pickled) when *x* is 2; else x."""
    if x == 2:
        import threading

        return threading.Lock()
    return x


def raise_if_negative_else_wait(x: int, release: str) -> int:
    """Raise ValueError for a negative *x*; else wait for *release* and return x."""
    if x < 0:
        raise ValueError(f"negative: {x}")
    wait_for_file(release)
    return x


def sleep_then_note(log: str, seconds: float, x: int) -> int:
    """Sleep *seconds*, then note *x* as a line of *log* and return it: a line
    says the call ran to its end, unless *x* is a line of ``<log>.stopped`` too
    (corral stopped it between its note and its return: it did not complete,
    and rightly runs again in a rerun)."""
    time.sleep(seconds)
    try:
        append_line(log, str(x))
        return x
    except corral.JobStopped:
        append_line(log + ".stopped", str(x))
        raise


def note_then_sleep(log: str, seconds: float) -> None:
    """Note a line in *log*, then sleep *seconds*."""
    append_line(log, "ran")
    time.sleep(seconds)


class UnprintableError(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str")


def raise_unprintable_on(x: int) -> int:
    """Raise :class:`UnprintableError` when *x* is 1; else return x."""
    if x == 1:
        raise UnprintableError()
    return x


def _cannot_load(x: int):
    raise ValueError(f"cannot load {x}")


class LoadsNowhere:
    """Pickles, but raises when loaded."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __reduce__(self):
        return _cannot_load, (self.x,)


def unloadable_on(x: int):
    """A value that cannot be loaded when *x* is 2; else x."""
    return LoadsNowhere(x) if x == 2 else x


SHARED_RESULT = [b"y" * 100_000]


def shared_result(x: int) -> list[bytes]:
    """The same list object, whatever *x*."""
    return SHARED_RESULT


class _UnprintableOnLoad:
    def __reduce__(self):
        return _raise_unprintable, ()


def _raise_unprintable():
    raise UnprintableError()


def _exit_on_load():
    raise SystemExit(3)


class _ExitsOnLoad:
    def __reduce__(self):
        return _exit_on_load, ()


def hostile_on_load(x: int, how: str):
    """A value whose loading raises an UnprintableError ("unprintable") or
    SystemExit ("exit") when *x* is 2; else x."""
    if x != 2:
        return x
    return _UnprintableOnLoad() if how == "unprintable" else _ExitsOnLoad()


def pid_after(seconds: float) -> int:
    """The worker's pid, after sleeping *seconds* (none for 0)."""
    if seconds:
        time.sleep(seconds)
    return os.getpid()


def note_and_raise_if_flagged(log: str, x: int, seconds: float, flag: str, bad: int) -> int:
    """Note *x* in *log*; raise ValueError (after 0.3 s) if *x* is *bad* and the
    file *flag* exists, else sleep *seconds* and return *x*. The arguments are
    the same whether it raises or not, so a rerun recognises the call."""
    append_line(log, str(x))
    if x == bad and os.path.exists(flag):
        time.sleep(0.3)
        raise ValueError(f"flagged: {x}")
    if seconds:
        time.sleep(seconds)
    return x


def unsettle_the_worker(how: str, where: str) -> str:
    """Change what a worker process holds for every job after this one, as a
    careless job may: its directory, environment, fds 1 and 2, sys.stdout, an
    alarm. Prints a line first (it must reach this job's own output)."""
    print("before", flush=True)
    if how == "chdir":
        os.makedirs(where, exist_ok=True)
        os.chdir(where)
        os.environ["CORRAL_TEST_LEAKED"] = "yes"
        os.environ.pop("HOME", None)
    elif how == "chdir-and-delete":
        os.makedirs(where, exist_ok=True)
        os.chdir(where)
        os.rmdir(where)
    elif how == "close-fd-1":
        os.close(1)
    elif how == "devnull":
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
    elif how == "close-sys-stdout":
        sys.stdout.close()
    elif how == "replace-sys-stdout":
        os.makedirs(where, exist_ok=True)
        sys.stdout = open(os.path.join(where, "mine"), "w")  # noqa: SIM115
    elif how == "rebind-environ":
        os.environ = dict(os.environ, CORRAL_TEST_LEAKED="yes")  # noqa: B003
    elif how == "ignore-signals":
        import signal

        for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
    elif how == "umask":
        os.umask(0o777)
    elif how == "alarm":
        import signal

        signal.alarm(1)
    return how


def what_the_worker_holds(seconds: float = 0) -> tuple[str, str | None, str | None]:
    """Print a line; after *seconds*, return the directory, $CORRAL_TEST_LEAKED and $HOME."""
    print("hello")
    time.sleep(seconds)
    return os.getcwd(), os.environ.get("CORRAL_TEST_LEAKED"), os.environ.get("HOME")


#: How many times a :class:`CountedLoad` was unpickled in this process.
LOADS_COUNTED = [0]


def _load_counted(value: int) -> CountedLoad:
    LOADS_COUNTED[0] += 1
    return CountedLoad(value)


class CountedLoad:
    """A value that counts how often this process unpickles it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self):
        return _load_counted, (self.value,)


def counted_load(value: int) -> CountedLoad:
    return CountedLoad(value)


#: How many Loaded values this process has unpickled.
LOADS = [0]


def _load(value: int) -> Loaded:
    LOADS[0] += 1
    return Loaded(value)


class Loaded:
    """A value that counts its unpickling in the process that loads it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self):
        return _load, (self.value,)


def loaded(value: int) -> Loaded:
    return Loaded(value)


def run_a_child_for(seconds: float) -> int:
    """Run ``sleep`` as a child and return its exit status (negative: killed by that signal)."""
    import subprocess

    return subprocess.run(["sleep", str(seconds)]).returncode


class _Trap:
    """A value whose unpickling creates the file *path*: proof of code run by loading it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def trap_for_loaders(path: str) -> _Trap:
    return _Trap(path)


def clean_up_when_stopped(marker: str, started: str, go_on: bool = False) -> int:
    """Say it started (*started*), then sleep; when corral stops it, its
    ``finally`` writes *marker*. With *go_on* it catches JobStopped and keeps
    sleeping, as a call that swallows every exception would."""
    Path(started).write_text(str(os.getpid()))
    try:
        while True:
            try:
                time.sleep(60)
            except corral.JobStopped:
                if not go_on:
                    raise
    finally:
        Path(marker).write_text("cleaned up")


def stop_myself_then_clean_up(marker: str, started: str) -> None:
    """Say it started (*started*), stop its own process (SIGSTOP), then sleep;
    its ``finally`` writes *marker*."""
    Path(started).write_text(str(os.getpid()))
    try:
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(60)
    finally:
        Path(marker).write_text("cleaned up")


def note_with_a_slow_finally(log: str, release: str, finally_s: float) -> None:
    """Note "begin" in *log* and wait for *release*; its ``finally`` takes
    *finally_s* seconds, then notes "end"."""
    append_line(log, "begin")
    try:
        wait_for_file(release)
    finally:
        time.sleep(finally_s)
        append_line(log, "end")


def partial_unless_released(started: str, release: str) -> str:
    """Say it started (*started*), wait for *release* and return "whole"; a
    stop its bare ``except:`` swallows makes it say so (``<started>.caught``)
    and return "partial", as a sloppy call would."""
    Path(started).write_text(str(os.getpid()))
    try:
        wait_for_file(release)
    except BaseException:  # (the sloppy call under test)
        Path(started + ".caught").touch()
        return "partial"
    return "whole"


def sleep_then_return(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def wait_on_a_thread_that_talks(started: str) -> None:
    """Start a thread that prints for a minute and wait for it: the common
    shape of a call whose work is in a thread (a pool's future, a join)."""
    def talk() -> None:
        for count in range(600):
            print(f"left-over thread {count}", flush=True)
            time.sleep(0.1)

    worker = threading.Thread(target=talk)
    worker.start()
    Path(started).write_text(str(os.getpid()))
    worker.join()


def log_then_sleep(log: str, index: int) -> int:
    with open(log, "a") as handle:
        handle.write(f"call {index}\n")
    time.sleep(0.15)
    return index


def _busy(seconds: float) -> None:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        pass


class _SlowToFree:
    def __del__(self) -> None:
        _busy(0.03)


def make_garbage_slow_to_free(marker: str, started: str) -> None:
    """Spend three quarters of its time in ``__del__``, where a raised exception is dropped."""
    Path(started).write_text(str(os.getpid()))
    try:
        while True:
            _SlowToFree()
            _busy(0.01)
    finally:
        Path(marker).write_text("cleaned up")


def block_every_signal() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    return os.getpid()


def clean_up_slowly_when_stopped(marks: str) -> None:
    """Sleep until stopped; its finally takes a second, and notes whether it
    was cut short."""
    def mark(line: str) -> None:
        with open(marks, "a") as handle:
            handle.write(line + "\n")

    try:
        time.sleep(60)
    finally:
        mark("cleanup begins")
        try:
            time.sleep(1)
            mark("cleanup done")
        except BaseException as error:
            mark(f"cleanup cut short by {type(error).__name__}")
            raise


_POOL: list = []


def leave_a_thread_pool() -> int:
    """Leave a thread pool behind in the worker, as a module-level pool does."""
    import concurrent.futures

    if not _POOL:
        _POOL.append(concurrent.futures.ThreadPoolExecutor(2))
    return _POOL[0].submit(pow, 3, 2).result()


def stopped_or_turned_into_an_error(log: str, index: int) -> int:
    """A map's call that takes JobStopped and raises an error of its own."""
    with open(log, "a") as handle:
        handle.write(f"call {index}\n")
    try:
        time.sleep(0.3)
    except corral.JobStopped:
        raise RuntimeError("cleanup failed while stopping") from None
    return index


def import_slowly(folder: str) -> None:
    """Import a module whose import takes a minute."""
    sys.path.insert(0, folder)
    import slow_to_import  # noqa: F401


def _slow_to_close():
    try:
        yield 1
    finally:
        _busy(0.03)


def drop_generators_slow_to_close(marker: str, started: str) -> None:
    """Spend three quarters of its time closing generators it drops, where
    Python drops what is raised, as in a ``__del__``."""
    Path(started).write_text(str(os.getpid()))
    try:
        while True:
            opened = _slow_to_close()
            next(opened)
            del opened
            _busy(0.01)
    finally:
        Path(marker).write_text("cleaned up")


def clean_up_slowly_then_return_partial(started: str, stopping: str) -> str:
    """Say it started (*started*) and sleep; stopped, say so (*stopping*),
    take a second to clean up, and return "partial"."""
    Path(started).touch()
    try:
        time.sleep(60)
    except corral.JobStopped:
        Path(stopping).touch()
        time.sleep(1.0)
        return "partial"
    return "whole"


def close_a_generator_slowly_then_return() -> str:
    """Drop a generator whose finalizer sleeps a second (where Python drops
    what is raised), then return "whole" at once."""
    def slow_to_close():
        try:
            yield 1
        finally:
            time.sleep(1.0)

    opened = slow_to_close()
    next(opened)
    del opened
    return "whole"


def set_an_unraisable_hook() -> int:
    sys.unraisablehook = lambda unraisable: None
    return os.getpid()


def run_a_scheduler_of_its_own(started: str) -> None:
    """Make a Scheduler, without a with block, and wait on its job."""
    inner = corral.Scheduler(cores=1)
    Path(started).write_text(str(os.getpid()))
    inner.submit(time.sleep, 60).result()
