"""The report as a person sees it: opened from a file in a real headless Chromium.

Screenshots of each page go to test-artifacts/ (report-*.png)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By

import corral
from corral.report import write_report
from report_runs import (BROKEN_MESSAGE, DAY, EXPECTED_BARS, MONDAY, mixed_run, night_between_runs,
                         plain_run)
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


def bar_of(data: dict, name: str) -> int:
    """The first bar of the job called *name*."""
    return data["bars"]["job"].index(data["jobs"]["name"].index(name))


def test_a_night_between_a_run_and_its_rerun_is_drawn_narrow_and_says_so(
        browser, tmp_path: Path) -> None:
    """Review: a run run again the next morning drew the night to scale, and its
    50 bars as two slivers at either end of an empty axis."""
    page = write_report(night_between_runs(tmp_path / "run"), tmp_path / "night.html")
    browser.get(page.as_uri())
    wait_until(lambda: bars_drawn(browser) == 50, 10, "the timeline to draw every attempt")
    canvas = browser.find_element(By.ID, "timeline")
    data = browser.execute_script("return Corral.data()")
    first, last = (browser.execute_script("return Corral.barCentre(arguments[0])",
                                          bar_of(data, name)) for name in ("first 0", "first 29"))
    assert last["x"] - first["x"] > 400, "the evening's 30 bars spread over half the width"
    assert canvas.get_attribute("data-breaks") == "1"
    assert browser.find_element(By.ID, "legend-break").text == "nothing ran: drawn narrow"
    ticks = canvas.get_attribute("data-ticks").split(" | ")
    assert any(tick.startswith("+14 h") for tick in ticks), (
        "after the break, the axis goes on from the morning's own time", ticks)

    hover(browser, bar_of(data, "again 7"))  # (where it is drawn is where the pointer finds it)
    tip = browser.find_element(By.ID, "tip")
    wait_until(tip.is_displayed, 5, "the tooltip to show")
    assert '"again 7"' in tip.text and "failed after 9.50 s" in tip.text, tip.text
    centre = browser.execute_script("return Corral.breakCentre(0)")
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(centre["x"] - canvas.size["width"] / 2),
        int(centre["y"] - canvas.size["height"] / 2)).perform()
    wait_until(lambda: "with no driver" in tip.text, 5, "the break to say what it is")
    assert tip.text.startswith("13.92 h with no driver"), tip.text
    screenshot(browser, "report-night-between-runs")


def test_a_run_of_days_on_thousands_of_slots_fits_the_page_and_says_its_dates(
        browser, tmp_path: Path) -> None:
    """Review: 3,000 jobs at once drew 3,000 lanes of 3 px, the page's end 9,000 px
    down (20,000: a canvas too tall to draw on a HiDPI screen); a job of two days
    read "9:00:00 AM → 9:00:00 AM"; zoomed in on a run of days, every tick of the
    axis read "+25.05 h"."""
    tried = [(f"task {n}", [(MONDAY, MONDAY + n, MONDAY + n + DAY * (1 + n % 3 / 2),
                             "failed" if n % 500 == 7 else "completed")]) for n in range(3000)]
    run = plain_run(tmp_path / "run", tried, [(MONDAY, MONDAY + 3 * DAY)], cores=3000)
    browser.get(write_report(run, tmp_path / "days.html").as_uri())
    wait_until(lambda: bars_drawn(browser) == 3000, 10, "the timeline to draw every attempt")
    canvas = browser.find_element(By.ID, "timeline")
    assert canvas.size["height"] <= 600, canvas.size

    browser.execute_script("Corral.select(arguments[0])", 2)  # 09:00:02 Monday to Wednesday
    times = browser.find_element(By.ID, "attempt-times").text
    monday, wednesday = browser.execute_script(
        "const d = Corral.data(), at = (ms) => new Date(d.origin * 1000 + ms).toLocaleDateString();"
        "return [at(d.bars.s[2]), at(d.bars.e[2])]")
    assert monday != wednesday and monday in times and wednesday in times, times

    origin = ScrollOrigin.from_element(canvas, 0, 0)
    zoom = ActionChains(browser)
    for _ in range(5):
        zoom.scroll_from_origin(origin, 0, -1600)
    zoom.perform()
    wait_until(lambda: "s" in canvas.get_attribute("data-ticks"), 5, "a zoom to seconds")
    ticks = canvas.get_attribute("data-ticks").split(" | ")
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks
    screenshot(browser, "report-days-thousands-of-slots")
