"""The dashboard's API and guard without a browser: output chunks, tokens, origins.

The routes are served for real by ``corral dashboard`` in tests/test_dashboard.py;
here the pieces they are made of are driven directly, for the cases a browser
cannot easily make (a character cut in two, hostile headers)."""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
import jobs
from support.waiting import wait_until

from corral.web.app import OUTPUT_CHUNK, read_output
from corral.web.guard import TOKEN_HEADER, Guard


def read_all(run: Path, job_id: str, stream: str = "stdout") -> str:
    text, offset = "", 0
    while True:
        answer = read_output(run, job_id, stream, offset)
        text += answer["text"]
        if not answer["more"]:
            return text
        assert answer["offset"] > offset, "every request moves on"
        offset = answer["offset"]


def test_output_read_in_chunks_never_splits_a_character(tmp_path: Path) -> None:
    run = tmp_path / "run"
    euros = "€" * (OUTPUT_CHUNK // 3 + 1000)   # 3 bytes each: chunks end inside one
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        scheduler.submit(jobs.run_code, f"print({euros!r}, end=''); result = None").result()
    assert read_all(run, "1") == euros


def test_the_tail_of_a_big_output_begins_on_a_character(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        scheduler.submit(jobs.run_code, "print('é' * 5000, end=''); result = None").result()
    answer = read_output(run, "1", "stdout", 0, tail=1001)
    assert answer["text"] == "é" * 500
    assert answer["skipped"] == 10000 - 1000 and not answer["more"]


def offset_now(run: Path) -> int | None:
    try:
        return read_output(run, "1", "stdout", 0)["offset"]
    except (KeyError, FileNotFoundError):  # not journaled yet
        return None


def write_in_two(run: Path, release: Path, first: str, rest: str, first_bytes: int) -> str:
    """Run a command that prints *first* (printf escapes), waits for *release*, then
    prints *rest*; check what is answered while it waits; return all it wrote."""
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        job = scheduler.shell(f"printf '{first}'; while [ ! -e {release} ]; do sleep 0.05; "
                              f"done; printf '{rest}'")
        wait_until(lambda: offset_now(run) == first_bytes, 20, "the job's first bytes")
        answer = read_output(run, "1", "stdout", 0)
        assert (answer["more"], answer["done"]) == (False, False), (
            "the half-written character is not answered, and there is nothing more to ask for")
        release.touch()
        job.result(timeout=30)
    return read_all(run, "1")


def test_a_character_still_being_written_waits_for_the_next_read(
        tmp_path: Path, release: Path) -> None:
    assert write_in_two(tmp_path / "run", release, "abc\\342\\202", "\\254 done", 3) == (
        "abc€ done")


def test_a_cut_character_after_a_bad_byte_still_waits(tmp_path: Path, release: Path) -> None:
    assert write_in_two(tmp_path / "run", release, "caf\\351 \\342\\202", "\\254 end", 5) == (
        "caf\ufffd € end")


def test_a_finished_job_ending_inside_a_character_shows_a_replacement(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        scheduler.shell("printf 'abc\\342\\202'").result()
    answer = read_output(run, "1", "stdout", 0)
    assert answer["text"] == "abc\ufffd" and answer["done"] and not answer["more"]


def test_output_of_an_unknown_job_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        scheduler.shell("true").result()
    with pytest.raises(KeyError, match=r"no job '9' in the run at .* \(1 job\)"):
        read_output(run, "9", "stdout", 0)


LOOPBACK = {"Host": "127.0.0.1:8765"}


def test_the_guard_wants_the_token_and_never_a_cookie() -> None:
    guard = Guard("127.0.0.1", 8765, token="secret")
    assert guard.refusal("GET", LOOPBACK, {}) is not None
    assert guard.refusal("GET", LOOPBACK, {"token": "secret"}) is None
    assert guard.refusal("GET", {**LOOPBACK, TOKEN_HEADER: "secret"}, {}) is None
    assert guard.refusal("GET", {**LOOPBACK, TOKEN_HEADER: "s\xe9cr\xeat\ufffd"}, {}) == (
        "no valid token: open the URL that corral dashboard printed (it ends with ?token=...)")
    assert guard.refusal("GET", {**LOOPBACK, "Cookie": "corral_token_8765=secret"}, {}) \
        is not None


def test_a_change_needs_the_header_and_its_own_origin() -> None:
    guard = Guard("127.0.0.1", 8765, token="secret")
    header = {**LOOPBACK, TOKEN_HEADER: "secret"}
    assert guard.refusal("POST", header, {}) is None, "a client that sends no Origin (curl)"
    assert guard.refusal("POST", {**header, "Origin": "http://127.0.0.1:8765"}, {}) is None
    assert guard.refusal("POST", {**LOOPBACK, "Origin": "http://127.0.0.1:8765"},
                         {"token": "secret"}) == (
        "a request that changes a run needs the token in the X-Corral-Token header")
    for origin in ("http://127.0.0.1:9999", "null", "http://localhost:8765"):
        assert guard.refusal("POST", {**header, "Origin": origin}, {}) == (
            f"refused: a request from {origin}, not from this dashboard's own page")
    assert guard.refusal("POST", {**header, "Sec-Fetch-Site": "cross-site"}, {}) == (
        "refused: a request from another site")


def test_on_another_interface_the_origin_is_the_host_asked_for() -> None:
    guard = Guard("0.0.0.0", 8080, token="secret")
    asked = {"Host": "10.1.2.3:8080", TOKEN_HEADER: "secret"}
    assert guard.refusal("POST", {**asked, "Origin": "http://10.1.2.3:8080"}, {}) is None
    assert guard.refusal("POST", {**asked, "Origin": "http://10.9.9.9:8080"}, {}) is not None
    guard6 = Guard("::", 8080, token="secret")
    asked6 = {"Host": "[2001:db8::1]:8080", TOKEN_HEADER: "secret"}
    assert guard6.refusal("POST", {**asked6, "Origin": "http://[2001:db8::1]:8080"}, {}) is None


_KILLED_DRIVER = """
import os, signal, sys, time, corral
with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    sched.shell("true").result()
    job = sched.shell("sleep 60")
    # (killed once the journal holds it running: its writer may lag the driver)
    while [stored.status for stored in corral.Run(sys.argv[1]).jobs(results=False)] != [
            corral.JobStatus.COMPLETED, corral.JobStatus.RUNNING]:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_no_process_drives_says_what_makes_its_unfinished_jobs_go_on(tmp_path: Path):
    """Cold review: the page of a run whose driver died said only "read-only",
    where corral status says how its jobs go on (and of a finished run, nothing)."""
    import subprocess
    import sys

    from corral.web.runs import driver_note

    run = tmp_path / "run"
    subprocess.run([sys.executable, "-c", _KILLED_DRIVER, str(run)], timeout=60)
    wait_until(lambda: corral.Run(run).owner is None, message="the killed driver's lock to go")
    note = driver_note(corral.Run(run))
    assert not note["driven"] and note["why"] == (
        "read-only: no corral process drives this run now (it ended, or its driver was "
        "stopped); the controls act through that process; run the script again")
    with corral.Scheduler(cores=1, journal=tmp_path / "done") as sched:
        sched.shell("true")
    assert driver_note(corral.Run(tmp_path / "done"))["why"].endswith(
        "the controls act through that process")
