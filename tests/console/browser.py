"""Debian's headless Chromium, driven by Selenium through the system chromedriver.

Nothing is downloaded: the driver is ``/usr/bin/chromedriver`` (passed to ``Service``, so
Selenium Manager never runs; ``SE_OFFLINE`` forbids it network access should it run), the
browser ``/usr/bin/chromium`` with a fresh profile and its background networking off.
``.ci/run`` installs both packages. Without them the tests fail, naming what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def chromium(profile: Path) -> webdriver.Chrome:
    """A headless Chromium with the profile directory ``profile``."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
            "(.ci/run does)"
        )
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
