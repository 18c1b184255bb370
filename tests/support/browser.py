"""A real headless Chromium for the page tests, driven by Selenium.

Debian's ``chromium`` and ``chromium-driver`` are installed by
``scripts/chromium/install.sh`` when missing (the tests' own set-up, as the
clusters' are). Chromium starts with the flags that keep it off the network
(this machine's network is closed; it would otherwise try Google's hosts at
every start) and a fresh profile per browser.

Screenshots go to ``test-artifacts/`` at the repository's root (ignored by git),
named after the test, for a person to look at.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def ensure_chromium() -> None:
    """Install Chromium and ChromeDriver if they are missing (root and apt needed)."""
    if os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK):
        return
    done = subprocess.run(["bash", str(ROOT / "scripts/chromium/install.sh")],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"could not install chromium: {done.stderr.strip()[-2000:]}")


def start_browser(width: int = 1280, height: int = 1000):
    """A headless Chromium under Selenium; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="corral-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--disable-extensions", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    driver._corral_profile = profile  # removed by close_browser
    return driver


def close_browser(driver) -> None:
    import shutil

    profile = getattr(driver, "_corral_profile", None)
    try:
        driver.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name: str, full_page: bool = True) -> Path:
    """Save what the browser shows as ``test-artifacts/<name>.png``; the whole
    page's height when *full_page*."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        height = driver.execute_script(
            "return Math.min(6000, document.documentElement.scrollHeight)")
        width = driver.execute_script("return window.outerWidth")
        driver.set_window_size(width, height + 120)
    driver.save_screenshot(str(path))
    return path
