"""``corral dashboard``: a live page of a run, served on loopback, behind a token.

The real command serves it; a real script drives the run; a real headless
Chromium looks at it (screenshots in test-artifacts/dashboard-*.png)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

import corral
import jobs
from support.browser import screenshot
from support.cli import Corral
from support.waiting import wait_until

TESTS = Path(__file__).resolve().parent


@dataclass
class Dashboard:
    url: str
    process: subprocess.Popen

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    @property
    def token(self) -> str:
        return self.url.rsplit("token=", 1)[1]


def start_dashboard(cli: Corral, *args: str) -> Dashboard:
    process = cli.popen("dashboard", *args)
    lines = []
    for _ in range(3):
        line = process.stdout.readline().decode()
        lines.append(line)
        found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
        if found:
            return Dashboard(found.group(0), process)
    process.kill()
    raise AssertionError(f"no URL printed: {lines} {process.stderr.read().decode()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def cli(tmp_path: Path) -> Corral:
    return Corral(tmp_path / "home", tmp_path / "run")


@pytest.fixture
def driven(tmp_path: Path, cli: Corral) -> Iterator[tuple[subprocess.Popen, Path]]:
    """The run at tmp_path/run, driven by tests/dashboard_driver.py until the test
    lets its jobs end."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = subprocess.Popen(
        [sys.executable, str(TESTS / "dashboard_driver.py"), str(cli.run), str(scratch)],
        env={**os.environ, "PYTHONPATH": str(TESTS)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (cli.run / "journal.db").exists() and any(
            job.status is corral.JobStatus.RUNNING for job in corral.Run(cli.run).jobs()),
            30, "the script's jobs to run")
        yield script, scratch
    finally:
        for name in ("open-gate", "stop-talking"):
            (scratch / name).touch()
        if cli.run.joinpath("paused").exists() or corral.Run(cli.run).paused:
            cli("resume")
        try:
            script.wait(timeout=30)
        except subprocess.TimeoutExpired:
            script.kill()
            script.wait()
        script.stdout.close()
        script.stderr.close()


@pytest.fixture
def dashboard(cli: Corral, driven) -> Iterator[Dashboard]:
    served = start_dashboard(cli)
    yield served
    stop(served.process)


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_requests_without_the_token_are_refused(dashboard: Dashboard) -> None:
    status, text = fetch(dashboard.base + "/")
    assert status == 403 and "no valid token" in text
    assert fetch(dashboard.base + "/api/state")[0] == 403
    assert fetch(dashboard.base + "/api/state?token=wrong")[0] == 403
    assert fetch(dashboard.url)[0] == 200
    with urllib.request.urlopen(dashboard.url, timeout=10) as page:
        assert page.headers.get("Set-Cookie") is None, (
            "no cookie: a browser would send one for 127.0.0.1 to every local port")
    state_status, state = fetch(f"{dashboard.base}/api/state?token={dashboard.token}")
    assert state_status == 200 and json.loads(state)["control"]["driven"] is True


def test_state_changing_requests_check_token_header_origin_and_host(
        dashboard: Dashboard, cli: Corral) -> None:
    pause = json.dumps({"verb": "pause"}).encode()
    json_type = {"Content-Type": "application/json"}
    status, text = fetch(f"{dashboard.base}/api/control?token={dashboard.token}", "POST",
                         json_type, pause)
    assert status == 403 and "needs the token in the X-Corral-Token header" in text
    status, text = fetch(dashboard.base + "/api/control", "POST",
                         {**json_type, "X-Corral-Token": dashboard.token,
                          "Origin": "http://evil.example"}, pause)
    assert status == 403 and "http://evil.example" in text
    port = dashboard.base.rsplit(":", 1)[1]
    status, text = fetch(dashboard.url, headers={"Host": f"rebound.example:{port}"})
    assert status == 403 and "only requests addressed to 127.0.0.1" in text
    assert not corral.Run(cli.run).paused, "no refused request paused the run"
    status, text = fetch(dashboard.base + "/api/control", "POST",
                         {**json_type, "X-Corral-Token": dashboard.token,
                          "Origin": dashboard.base}, json.dumps({"verb": "explode"}).encode())
    assert status == 400 and "verb must be one of pause, resume, cancel, abort" in text


def job_status_shown(browser, name: str) -> str:
    """The status the page shows for job *name*, selecting it first."""
    return browser.execute_script(
        "const d = Corral.data(); if (!d) return null;"
        "const n = d.jobs.name.indexOf(arguments[0]);"
        "if (Corral.selected() !== n) Corral.select(n, false);"
        "return document.querySelector('#job-table .chip').textContent", name)


def test_the_page_follows_a_running_script_and_its_buttons_act_on_it(
        browser, dashboard: Dashboard, driven, cli: Corral) -> None:
    _, scratch = driven
    browser.get(dashboard.url)
    browser.execute_script("window.sameDocument = true")
    wait_until(lambda: job_status_shown(browser, "gate") == "running", 10, "gate shown running")
    (scratch / "open-gate").touch()
    wait_until(lambda: job_status_shown(browser, "gate") == "completed", 10,
               "gate shown completed without a reload")
    assert browser.execute_script("return window.sameDocument === true"), "no reload happened"

    job_status_shown(browser, "talker")
    output = browser.find_element(By.ID, "output-text")
    wait_until(lambda: "tick 3" in output.text, 10, "the talker's output to show")
    seen = len(re.findall(r"tick \d+", output.text))
    wait_until(lambda: len(re.findall(r"tick \d+", output.text)) > seen + 3, 10,
               "more of the talker's output, as it is written")
    screenshot(browser, "dashboard-running", full_page=False)

    browser.find_element(By.ID, "btn-pause").click()
    wait_until(lambda: "PAUSED" in cli.ok("status").header, 10, "corral status to say paused")
    wait_until(lambda: not browser.find_element(By.ID, "btn-resume").get_attribute("disabled"),
               5, "resume to be offered")
    browser.find_element(By.ID, "btn-resume").click()
    wait_until(lambda: "PAUSED" not in cli.ok("status").header, 10, "the run to go on")

    (scratch / "stop-talking").touch()
    wait_until(lambda: corral.Run(cli.run).owner is None, 30, "the script to end")
    # The note first: the pause button is also disabled while the page still shows
    # the run paused, before its next poll.
    wait_until(lambda: "read-only: no corral process drives this run now"
               in browser.find_element(By.ID, "control-note").text, 30,
               "the page to say no driver runs")  # (a loaded machine: seen past 10 s)
    assert browser.find_element(By.ID, "btn-pause").get_attribute("disabled")
    assert job_status_shown(browser, "later") == "completed"
    screenshot(browser, "dashboard-finished")


def test_a_queued_job_is_found_in_the_job_list_and_cancelled_from_the_page(
        browser, dashboard: Dashboard, driven, cli: Corral) -> None:
    browser.get(dashboard.url)
    job_list = browser.find_element(By.ID, "job-list")
    wait_until(lambda: 'job 3 "later"' in job_list.text, 10, "the queued job listed")
    assert "queued" in job_list.text
    job_list.find_element(By.PARTIAL_LINK_TEXT, 'job 3 "later"').click()
    wait_until(lambda: "later" in browser.find_element(By.ID, "details-title").text, 5,
               "the queued job selected")
    browser.find_element(By.ID, "btn-cancel-job").click()
    wait_until(lambda: cli("status", "--all").rows()["3"]["STATUS"] == "CANCELLED", 10,
               "corral status to show the queued job cancelled")
    wait_until(lambda: job_status_shown(browser, "later") == "cancelled", 10,
               "the page to show it cancelled")
    browser.find_element(By.ID, "job-filter").send_keys("cancelled")
    wait_until(lambda: browser.find_element(By.ID, "jobs-count").text == "(1 found)", 5,
               "the finder to find the cancelled job by its status")


def test_the_runs_of_the_state_directory_can_be_switched_to(
        browser, tmp_path: Path, cli: Corral) -> None:
    state_dir = tmp_path / "home" / ".local" / "state" / "corral"
    other = state_dir / "nightly"
    with corral.Scheduler(journal=other, cores=1) as scheduler:
        scheduler.options(name="nightly-job").submit(jobs.square, 2).result()
    with corral.Scheduler(journal=cli.run, cores=1) as scheduler:
        scheduler.options(name="first-job").submit(jobs.square, 3).result()
    served = start_dashboard(cli)
    try:
        browser.get(served.url)
        wait_until(lambda: browser.find_element(By.ID, "run-title").text == "run", 10,
                   "the first run")
        assert browser.find_element(By.ID, "btn-pause").get_attribute("disabled")
        select = Select(browser.find_element(By.ID, "run-select"))
        wait_until(lambda: len(select.options) == 2, 10, "both runs listed")
        select.select_by_value(str(other.resolve()))
        wait_until(lambda: browser.find_element(By.ID, "run-title").text == "nightly", 10,
                   "the other run shown")
        # (its title shows at once, on an empty page; its jobs come with the next poll)
        wait_until(lambda: browser.execute_script("return Corral.data().jobs.name")
                   == ["nightly-job"], 10, "the other run's jobs shown")
        status, text = fetch(f"{served.base}/api/state?token={served.token}&run=/etc")
        assert status == 404 and "not a run this dashboard shows" in text
    finally:
        stop(served.process)


def test_dashboard_bad_input_is_one_line(tmp_path: Path, cli: Corral) -> None:
    from support.cli import assert_one_line_error

    assert_one_line_error(cli("dashboard", "--run", str(tmp_path / "nothing")), 3,
                          r"no corral run at .*nothing")
    with corral.Scheduler(journal=cli.run, cores=1):
        pass
    served = start_dashboard(cli)
    try:
        port = served.base.rsplit(":", 1)[1]
        assert_one_line_error(cli("dashboard", "--port", port), 2,
                              rf"cannot listen on 127\.0\.0\.1:{port}: Address already in use")
    finally:
        stop(served.process)


def fetch_until(url: str, done: threading.Event, answered: list[int]) -> None:
    """Fetch *url* over and over until *done* or its server stops listening."""
    while not done.is_set():
        try:
            answered.append(fetch(url)[0])
        except OSError:
            return


def test_sigterm_ends_a_dashboard_in_the_middle_of_answering(tmp_path: Path, cli: Corral) -> None:
    """Cold review: ``kill`` while pages were being fetched was taken for one
    answer's error and swallowed; the dashboard served on, at times spinning a core."""
    with corral.Scheduler(journal=cli.run, cores=1):
        pass
    for _ in range(5):
        served = start_dashboard(cli)
        done, answered = threading.Event(), []
        fetchers = [threading.Thread(target=fetch_until, args=(
            f"{served.base}/?token={served.token}", done, answered)) for _ in range(4)]
        for fetcher in fetchers:
            fetcher.start()
        try:
            wait_until(lambda: len(answered) >= 8, 30,  # noqa: B023 (waited for at once)
                       "the dashboard to answer")
            assert set(answered) == {200}, answered
            served.process.send_signal(signal.SIGTERM)
            status = served.process.wait(timeout=15)
            said = served.process.stderr.read().decode()
        finally:
            done.set()
            for fetcher in fetchers:
                fetcher.join()
            stop(served.process)
        assert (status, said) == (
            143, "corral: terminated (SIGTERM); the run and its jobs go on\n")


def test_a_run_directory_removed_under_the_page_is_said_in_words(
        browser, tmp_path: Path, cli: Corral) -> None:
    """Attack review: the page showed the server's JSON, `cannot read the run:
    {"error": "no run directory ..."}`."""
    with corral.Scheduler(journal=cli.run, cores=1) as scheduler:
        scheduler.submit(jobs.square, 3).result()
    served = start_dashboard(cli)
    try:
        browser.get(served.url)
        wait_until(lambda: browser.find_element(By.ID, "run-title").text == "run", 10,
                   "the run shown")
        cli.run.rename(tmp_path / "moved")
        said = f"cannot read the run: no run directory {cli.run}"
        wait_until(lambda: browser.find_element(By.ID, "updated").text == said, 10,
                   "the page to say the run is gone")
    finally:
        stop(served.process)
