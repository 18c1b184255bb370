"""Make docs/report-timeline.png, the README's picture of a report's timeline.

    .venv/bin/python docs/report_picture.py

A real run on the local backend (4 cores, about 8 s): 36 commands of varied
lengths, one needing 2 cores, a flaky one retried, two that fail, one killed by
its timeout and the one that depended on a failed job; then its report, opened
in headless Chromium (the tests' set-up installs it), the timeline section
photographed.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import corral  # noqa: E402
from support.browser import close_browser, start_browser  # noqa: E402


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="corral-picture-"))
    rng = random.Random(12)
    with corral.Scheduler(journal=scratch / "run", cores=4) as scheduler:
        prepared = [scheduler.shell(f"sleep {rng.uniform(0.2, 0.8):.2f}", name=f"prepare-{i}")
                    for i in range(8)]
        scheduler.shell("sleep 1.5", name="assemble", cores=2, after=prepared[:2])
        flaky = scratch / "flaky"
        scheduler.shell(f"test -e {flaky} || {{ touch {flaky}; sleep 0.4; exit 1; }}; sleep 0.6",
                        name="fetch", retries=1)
        for i in range(24):
            scheduler.shell(f"sleep {rng.uniform(0.1, 1.2):.2f}", name=f"simulate-{i}",
                            after=[prepared[i % 8]])
        broken = scheduler.shell("sleep 0.7; echo 'mesh has 3 inverted cells' >&2; exit 2",
                                 name="mesh")
        scheduler.shell("sleep 1", name="solve", after=[broken])
        scheduler.shell("sleep 30", name="converge", timeout="2s")
        scheduler.shell("sleep 0.3; exit 1", name="validate")
    page = corral.Run(scratch / "run").report(scratch / "report.html")
    browser = start_browser(1100, 900)
    try:
        browser.get(page.as_uri())
        section = browser.find_element("id", "timeline-section")
        browser.execute_script("arguments[0].scrollIntoView()", section)
        time.sleep(0.5)  # a photograph, not a test: the page draws in ~0.1 s
        section.screenshot(str(HERE / "report-timeline.png"))
    finally:
        close_browser(browser)
    print(f"wrote {HERE / 'report-timeline.png'} from {scratch / 'run'}")


if __name__ == "__main__":
    main()
