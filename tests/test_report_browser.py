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
