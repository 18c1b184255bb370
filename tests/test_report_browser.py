"""The report as a person sees it: opened from a file in a real headless Chromium.

Screenshots of each page go to test-artifacts/ (report-*.png)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By

import corral
from report_runs import BROKEN_MESSAGE, EXPECTED_BARS, mixed_run
from support.browser import screenshot
from support.waiting import wait_until


@pytest.fixture(scope="module")
def mixed_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("mixed")
    run = mixed_run(base / "run", base)
    return corral.Run(run).report(base / "report.html")


def bars_drawn(browser) -> int:
    return int(browser.find_element(By.ID, "timeline").get_attribute("data-bars"))


def hover(browser, bar: int) -> None:
    """Move the mouse onto bar *bar* of the timeline."""
    canvas = browser.find_element(By.ID, "timeline")
    centre = browser.execute_script("return Corral.barCentre(arguments[0])", bar)
    size = canvas.size
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(centre["x"] - size["width"] / 2), int(centre["y"] - size["height"] / 2)
    ).perform()


def test_the_report_shows_every_attempt_and_why_jobs_failed(browser, mixed_report: Path) -> None:
    browser.get(mixed_report.as_uri())
    wait_until(lambda: bars_drawn(browser) == EXPECTED_BARS, 10,
               "the timeline to draw every attempt")
    failures = browser.find_element(By.ID, "failures").text
    assert "exit code 3" in failures and BROKEN_MESSAGE in failures
    assert "timed out after 0.5s" in failures
    assert "upstream job 3 'broken' failed" in failures
    assert browser.find_element(By.ID, "failures-count").text == "(4)"
    jobs_card = browser.find_element(By.ID, "card-jobs").text
    assert "2 completed" in jobs_card and "1 failed" in jobs_card and "2 cancelled" in jobs_card
    # (A cold review found the cores chart's curve of waiting jobs in no legend.)
    legend = browser.find_element(By.ID, "legend").text
    assert "waiting to start" in legend and "jobs waiting, over time (the cores chart)" in legend
    screenshot(browser, "report-mixed-run")


def test_hover_tells_a_bars_job_a_click_shows_its_dependencies_and_the_wheel_zooms(
        browser, mixed_report: Path) -> None:
    browser.get(mixed_report.as_uri())
    wait_until(lambda: bars_drawn(browser) == EXPECTED_BARS, 10, "the timeline to draw")
    data = browser.execute_script("return Corral.data()")
    broken = data["jobs"]["name"].index("broken")
    bar = data["bars"]["job"].index(broken)
    hover(browser, bar)
    tip = browser.find_element(By.ID, "tip")
    wait_until(tip.is_displayed, 5, "the tooltip to show")
    assert 'job 3 "broken"' in tip.text and "exit code 3" in tip.text
    assert BROKEN_MESSAGE in tip.text, "the tooltip shows the stderr tail"
    ActionChains(browser).click().perform()
    wait_until(lambda: 'broken' in browser.find_element(By.ID, "details-title").text, 5,
               "the details of the clicked job")
    details = browser.find_element(By.ID, "details").text
    assert 'job 4 "downstream"' in details, "its child is listed"
    assert "echo 'about to fail'" in details
    screenshot(browser, "report-job-selected")

    canvas = browser.find_element(By.ID, "timeline")
    origin = ScrollOrigin.from_element(canvas, -canvas.size["width"] // 2 + 70, 0)
    for _ in range(6):
        ActionChains(browser).scroll_from_origin(origin, 0, -400).perform()
    wait_until(lambda: bars_drawn(browser) < EXPECTED_BARS, 5,
               "zooming into the start to leave later bars out of view")
    browser.find_element(By.ID, "btn-reset").click()
    wait_until(lambda: bars_drawn(browser) == EXPECTED_BARS, 5, "show all to draw every bar")


def test_a_hostile_job_name_shows_as_text(browser, tmp_path: Path) -> None:
    hostile = "<img src=x onerror=\"window.owned=1\"></script><script>window.owned=2</script>"
    run = tmp_path / "run"
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        scheduler.shell("exit 1", name=hostile).exception()
    browser.get(corral.Run(run).report(tmp_path / "r.html").as_uri())
    wait_until(lambda: bars_drawn(browser) == 1, 10, "the timeline to draw")
    assert hostile in browser.find_element(By.ID, "failures").text
    assert browser.execute_script("return window.owned === undefined")


def test_a_report_of_a_run_still_going_says_when_and_failures_leave_the_timeline_near(
        browser, tmp_path: Path) -> None:
    """Cold review: a report written while jobs ran had no date (its running
    bars end at "now", which the file never said), and a run of many failures
    listed them all before the timeline, 45,000 px down the page."""
    import jobs

    release = tmp_path / "release"
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        failing = [scheduler.shell(f"echo failure {number} >&2; exit 1")
                   for number in range(60)]
        running = scheduler.submit(jobs.wait_for_file, str(release))
        wait_until(lambda: running.status is corral.JobStatus.RUNNING
                   and all(job.done() for job in failing))
        run = corral.Run(tmp_path / "run")
        wait_until(lambda: sorted(job.status.name for job in run.jobs(results=False))
                   == ["FAILED"] * 60 + ["RUNNING"],
                   message="the journal to hold them all")  # (its writer may lag the driver)
        report = run.report(tmp_path / "report.html")
        release.touch()
    browser.get(report.as_uri())
    wait_until(lambda: bars_drawn(browser) == 61, 10, "the timeline to draw every attempt")
    assert " · as of " in browser.find_element(By.ID, "run-path").text
    assert browser.find_element(By.ID, "failures-count").text == "(60)"
    timeline_top = browser.execute_script(
        "return document.getElementById('timeline-section').getBoundingClientRect().top"
        " + window.scrollY")
    assert timeline_top < 1500, timeline_top
    screenshot(browser, "report-many-failures")


def test_a_live_pages_utilisation_counts_on_at_the_cores_of_the_driver_now(
        browser, mixed_report: Path) -> None:
    """Cold review: after a killed run was run again, the page counted the cores
    offered between two readings at the run's average rate, which the time no
    driver ran it had lowered: with every core busy, utilisation read 101 %."""
    browser.get(mixed_report.as_uri())
    wait_until(lambda: bars_drawn(browser) == EXPECTED_BARS, 10, "the timeline to draw")
    utilisation, summary = browser.execute_script("""
        const d = Corral.data(), s = d.summary;
        d.bars.e = d.bars.e.map((end, i) => i < 2 ? null : end);  // two jobs run now
        const held = d.jobs.cores[d.bars.job[0]] + d.jobs.cores[d.bars.job[1]];
        // 100 s of wall time, half of it with no driver; every core busy while driven
        s.wall_seconds = 100; s.available_core_seconds = 50 * held;
        s.busy_core_seconds = 50 * held; s.cores_now = held; s.undriven_seconds = 50;
        Corral.tick(d.now + 10000);
        return [s.utilisation, document.getElementById('summary').textContent];""")
    assert utilisation == pytest.approx(1.0)
    assert "100 %" in summary
    assert "of it with no driver" in summary  # (and the wall time says how much was down time)


def test_a_run_whose_driver_is_gone_says_so_above_all_and_long_words_wrap(
        browser, tmp_path: Path) -> None:
    """Cold review: a killed run's page said "7 running" and no more; a reason
    thousands of characters long made a tooltip that hid the timeline, and a
    long name gave its card a scroll bar of its own."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_ONE_RUNS, str(run)],
                            timeout=60, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    page = corral.Run(run).report(tmp_path / "report.html")
    browser.get(page.as_uri())
    wait_until(lambda: bars_drawn(browser) == 2, 10, "the timeline to draw")
    assert browser.find_element(By.ID, "card-orphaned").text == (
        "no driver\n1 unfinished\njob: its driver is gone, and nothing runs it now; the next "
        "run of the script runs it again")
    failure = browser.find_element(By.CSS_SELECTOR, "#failures .failure")
    assert failure.size["width"] <= browser.find_element(By.ID, "failures").size["width"]
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= browser.execute_script("return window.innerWidth"), "no sideways scroll"
    hover(browser, 0)
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and tip.size["height"] < 400, tip.size
    screenshot(browser, "report-driver-gone")


KILLED_WHILE_ONE_RUNS = """
import os, signal, sys, time, corral
with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:
    broken = scheduler.shell("echo " + "K" * 3000 + " >&2; exit 3", name="Z" * 1024)
    corral.wait([broken])
    running = scheduler.shell("sleep 60")
    while running.status is not corral.JobStatus.RUNNING:
        time.sleep(0.01)
    scheduler._journal.flush(wait=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
