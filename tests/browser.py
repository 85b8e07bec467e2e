"""A real headless browser for the tests that open jaxfactor's pages.

Debian's ``chromium`` and ``chromium-driver`` driven by ``selenium``. Where
they are missing the tests skip, except under ``CI=true``: there ``.ci/run``
installs them, so a missing browser is a failure of the set-up, not a reason
to skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver",)


def _which(names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    # Debian puts the driver beside the browser's own files too.
    for path in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver"):
        if os.path.exists(path):
            return path
    return None


def missing(reason: str):
    """Skips the test, or fails it under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs the browser, so this is a set-up failure)")
    pytest.skip(reason)


def chromium_driver(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver (the caller quits it).

    Args:
      width, height: the window size in CSS pixels.

    Returns:
      A ``selenium.webdriver.Chrome`` on Debian's chromium, with no network
      use beyond loopback (no extensions, no component updates, no sync).
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed")
    browser = _which(CHROMIUM_CANDIDATES)
    driver = _which(DRIVER_CANDIDATES)
    if browser is None or driver is None:
        missing("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-background-networking",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
