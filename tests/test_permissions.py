"""A run belongs to its user: another user can neither read it nor control it.

These tests need root, to create a second user (``corraltest``, a system user
without a home, made once and left in place) and to act as it with
``runuser``. Root itself bypasses file permissions, so against root only the
control server's SO_PEERCRED uid check protects a run: that is tested too.

The other user may not be able to run this checkout's virtualenv (it may live
under a private directory such as /root). Then its attempts on raw files are
stdlib code run by the system ``/usr/bin/python3``, and its ``corral``
commands are ``/usr/bin/python3 -m corral.cli`` with corral's source and
dependencies on PYTHONPATH (only where that interpreter has the same Python
version, so that compiled dependencies load).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral import Run
from corral.control.server import send_request
from corral.errors import CorralError

from support.cli import (CORRAL, Corral, Outcome, assert_one_line_error, kill_and_wait, owner_pid,
                         pid_gone)
from support.waiting import wait_until

OTHER_USER = "corraltest"
SYSTEM_PYTHON = "/usr/bin/python3"

#: What another user tries on a run directory: plain stdlib, one JSON line out.
PROBE = r"""
import json, os, socket, sys
run = sys.argv[1]
tried = {}
def attempt(name, action):
    try:
        action()
        tried[name] = "allowed"
    except Exception as error:
        tried[name] = type(error).__name__
def connect():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(os.path.join(run, "control.sock"))
attempt("list the run directory", lambda: os.listdir(run))
attempt("read journal.db", lambda: open(os.path.join(run, "journal.db"), "rb").read(1))
attempt("read owner.lock", lambda: open(os.path.join(run, "owner.lock")).read())
attempt("read a job's stdout", lambda: open(os.path.join(run, "1", "stdout")).read())
attempt("connect to control.sock", connect)
print(json.dumps(tried))
"""


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int
    #: argv prefix that runs corral's CLI as this user, or None if it cannot.
    corral: tuple[str, ...] | None
    #: extra environment that prefix needs (PYTHONPATH for the system python).
    corral_env: dict[str, str]
    why_no_corral: str = ""

    def run(self, argv: list[str], env: dict[str, str], cwd: Path,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run *argv* as this user with exactly *env* (plus PATH)."""
        assignments = [f"{key}={value}" for key, value in
                       {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}.items()]
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i", *assignments, *argv],
                              cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def corral_cmd(self, args: list[str], env: dict[str, str], cwd: Path) -> Outcome:
        if self.corral is None:
            pytest.skip(f"user {self.name} cannot run corral here: {self.why_no_corral}")
        done = self.run([*self.corral, *args], {**self.corral_env, **env}, cwd)
        return Outcome(tuple(args), done.returncode, done.stdout, done.stderr)


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", OTHER_USER], capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: made meanwhile by another test session
        pytest.fail(f"cannot create the test user {OTHER_USER}: {done.stderr.strip()}")
    return pwd.getpwnam(OTHER_USER)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A temporary directory every user may traverse (not list into runs)."""
    path = Path(tempfile.mkdtemp(prefix="corral-permissions-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def other(base: Path) -> OtherUser:
    if os.geteuid() != 0:
        pytest.skip("!!! SKIPPED: these tests need root, to create a second user "
                    f"({OTHER_USER}) and act as it; run them as root (e.g. in CI) to check "
                    "that runs are private to their user !!!")
    for tool in ("useradd", "runuser"):
        if shutil.which(tool) is None:
            pytest.skip(f"!!! SKIPPED: {tool} is missing; cannot act as a second user !!!")
    entry = _ensure_user()
    user = OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid, None, {})
    probe = user.run([SYSTEM_PYTHON, "-c", "import os, sys; os.listdir(sys.argv[1])",
                      os.fspath(base)], {}, base)
    if probe.returncode != 0:
        pytest.skip(f"!!! SKIPPED: {OTHER_USER} cannot run {SYSTEM_PYTHON} in {base}: "
                    f"{probe.stderr.strip()} !!!")
    check = "import corral.cli.main, corral.cli.daemon"
    if user.run([sys.executable, "-c", check], {}, base).returncode == 0:
        return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid, (CORRAL,), {})
    env = {"PYTHONPATH": _readable_copy(base)}
    version = user.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], {}, base)
    if version.stdout.strip() != str(tuple(sys.version_info[:2])):
        return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid, None, {},
                         f"{sys.executable} is out of its reach and {SYSTEM_PYTHON} is "
                         f"Python {version.stdout.strip()}, not {sys.version_info[:2]}")
    imported = user.run([SYSTEM_PYTHON, "-c", check], env, base)
    if imported.returncode != 0:
        return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid, None, {},
                         f"corral does not import under {SYSTEM_PYTHON}: {imported.stderr}")
    return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid,
                     (SYSTEM_PYTHON, "-m", "corral.cli"), env)


#: What ``corral.cli.main`` and ``corral.cli.daemon`` import, corral included.
_IMPORTED = ("corral", "cloudpickle", "psutil", "click", "rich", "platformdirs", "markdown_it",
             "mdurl", "pygments")


def _readable_copy(base: Path) -> str:
    """A copy of corral and its dependencies that any user may read.

    This checkout and its virtualenv may sit in a directory only root may
    enter (a clean clone in a 0700 temporary directory, /root); the other
    user's ``python3 -m corral.cli`` then imports this copy instead.
    """
    import importlib

    target = base / "pythonpath"
    if not target.exists():
        target.mkdir(mode=0o755)
        for name in _IMPORTED:
            source = Path(importlib.import_module(name).__file__).resolve().parent
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    return os.fspath(target)


# -- a run of root's, seen by another user --------------------------------------------------


@pytest.fixture(scope="module")
def root_run(other: OtherUser, base: Path) -> Iterator[Corral]:
    """A run made by ``corral submit`` as root, its daemon alive (so its socket is there)."""
    home = base / "root-home"
    home.mkdir()
    mine = Corral(home, base / "root-run")
    job = mine.submit("echo the secret output of root")
    assert mine("wait", job).status == 0
    yield mine
    mine.stop_daemon()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_run_directory_and_its_files_are_private_to_their_user(root_run):
    run = root_run.run
    assert root_run.daemon_pid() is not None  # control.sock is live
    assert _mode(run) == 0o700
    assert _mode(run / "1") == 0o700
    for name in ("journal.db", "journal.db-wal", "journal.db-shm", "corral.log", "daemon.log",
                 "owner.lock", "control.sock", "1/stdout"):
        assert _mode(run / name) == 0o600, f"{name} is {oct(_mode(run / name))}"
    assert stat.S_ISSOCK((run / "control.sock").lstat().st_mode)


def test_another_user_can_neither_read_the_run_nor_reach_its_socket(root_run, other, base):
    probe = other.run([SYSTEM_PYTHON, "-c", PROBE, os.fspath(root_run.run)], {}, base)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {
        "list the run directory": "PermissionError",
        "read journal.db": "PermissionError",
        "read owner.lock": "PermissionError",
        "read a job's stdout": "PermissionError",
        "connect to control.sock": "PermissionError",
    }


@pytest.mark.parametrize("args", [["status"], ["pause"]])
def test_corral_commands_of_another_user_fail_with_one_permission_line(root_run, other, base,
                                                                       args):
    home = base / "other-home"
    home.mkdir(exist_ok=True)
    os.chown(home, other.uid, other.gid)
    outcome = other.corral_cmd(args, {"HOME": os.fspath(home), "TMPDIR": os.fspath(home),
                                      "CORRAL_RUN": os.fspath(root_run.run),
                                      "CORRAL_CONFIG": os.devnull}, home)
    assert_one_line_error(outcome, 3, rf"^corral: error: permission denied: the run at "
                                      rf"{re.escape(str(root_run.run))} belongs to another user$")
    assert not Run(root_run.run).paused
    assert len(Run(root_run.run).jobs()) == 1


def test_status_of_another_user_on_a_run_directory_made_0755_is_one_permission_line(
        root_run, other, base):
    """BUG: with the directory open to others but journal.db still 0600, SQLite
    said only "unable to open database file", as a traceback."""
    home = base / "other-home"
    home.mkdir(exist_ok=True)
    os.chown(home, other.uid, other.gid)
    root_run.run.chmod(0o755)
    try:
        outcome = other.corral_cmd(["status"], {
            "HOME": os.fspath(home), "TMPDIR": os.fspath(home),
            "CORRAL_RUN": os.fspath(root_run.run), "CORRAL_CONFIG": os.devnull},
            home)
    finally:
        root_run.run.chmod(0o700)
    assert_one_line_error(outcome, 3, rf"^corral: error: permission denied: the run at "
                                      rf"{re.escape(str(root_run.run))} belongs to another user$")


# -- a run of the other user's, and root ---------------------------------------------------


@pytest.fixture(scope="module")
def others_run(other: OtherUser, base: Path) -> Iterator[tuple[Path, int]]:
    """A run made by ``corral submit`` as the other user, its daemon alive.

    Yields (run directory, daemon pid). The daemon is detached from the test
    (``corral`` starts it in a session of its own); it is stopped by its user at
    teardown, and killed by root as a last resort."""
    home = base / "others-home"
    home.mkdir()
    os.chown(home, other.uid, other.gid)
    home.chmod(0o700)
    run = home / "run"
    env = {"HOME": os.fspath(home), "TMPDIR": os.fspath(home), "CORRAL_RUN": os.fspath(run),
           "CORRAL_CONFIG": os.devnull, "CORRAL_DAEMON_IDLE": "30"}
    submitted = other.corral_cmd(["submit", "echo their own job"], env, home)
    daemon = owner_pid(run)
    try:
        assert submitted.status == 0, str(submitted)
        assert daemon is not None and Path("/proc", str(daemon)).stat().st_uid == other.uid
        wait_until(lambda: [job.status.name for job in Run(run).jobs()] == ["COMPLETED"], 20,
                   "the other user's job to complete")
        yield run, daemon
    finally:
        if daemon is not None:
            stopped = other.corral_cmd(["stop"], env, home)
            try:
                wait_until(lambda: pid_gone(daemon), 20, f"{other.name}'s daemon to stop")
            except AssertionError:
                kill_and_wait(daemon)
                raise AssertionError(f"corral stop did not stop it: {stopped}") from None


def _ask(run: Path, request: dict) -> dict:
    """Send one control request as the protocol allows and return the reply,
    even when the server answered and hung up before reading all of it (the
    race that the last two tests of this module show in send_request)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(os.fspath(run / "control.sock"))
        try:
            connection.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer is waiting all the same
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return json.loads(answer)


def test_root_is_refused_by_the_uid_check_of_the_control_socket(others_run, other):
    run, daemon = others_run
    assert _mode(run) == 0o700 and _mode(run / "control.sock") == 0o600
    for verb in ("pause", "stop"):
        reply = _ask(run, {"verb": verb})
        assert (reply["ok"], reply["error"]) == (
            False, f"permission denied: this run belongs to uid {other.uid}")
    assert not Run(run).paused
    assert not pid_gone(daemon)


def test_a_refused_client_gets_the_refusal_even_while_still_sending(others_run, other):
    """The server answers a stranger and hangs up without reading the request. A
    request larger than the socket buffer is still being sent then, so
    send_request fails with EPIPE/ECONNRESET instead of returning the refusal.
    (Small requests hit the same race now and then: the reply may come back
    before the request is sent.)"""
    run, _ = others_run
    with pytest.raises(CorralError, match=rf"^permission denied: this run belongs to uid "
                                          rf"{other.uid}$"):
        send_request(run, {"verb": "ping", "padding": "x" * 600_000})


def test_corral_submit_of_root_with_a_large_environment_says_it_was_refused(others_run, other,
                                                                           tmp_path):
    """``corral submit`` sends the whole environment; when the refusal cuts it
    short, click takes the EPIPE for a closed stdout and exits 1 saying nothing."""
    run, _ = others_run
    root = Corral(tmp_path, run, env={f"LARGE_{number}": "x" * 100_000 for number in range(3)})
    assert_one_line_error(root("submit", "echo injected by root"), 3,
                          rf"^corral: error: permission denied: this run belongs to uid "
                          rf"{other.uid}$")
    assert [job.command for job in Run(run).jobs()] == ["echo their own job"]
