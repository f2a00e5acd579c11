"""The HTML report in headless Chromium: loads offline without console errors and shows every image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import require
from fixtures_report import HOSTILE_CLASS, make_fake_run
from selenium import webdriver

from reports.build import main

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture
def browser(tmp_path: Path):
    require(bool(CHROMIUM and CHROMEDRIVER),
            "headless Chromium not installed (Debian packages chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_in_chromium(browser, tmp_path: Path):
    root = make_fake_run(tmp_path / "run")
    assert main([str(root)]) == 0
    browser.get((root / "report.html").resolve().as_uri())
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    images = browser.execute_script(
        "return Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth, i.clientWidth])")
    assert len(images) >= 10
    broken = [alt for alt, complete, natural, shown in images if not (complete and natural > 0 and shown > 0)]
    assert broken == []
    assert HOSTILE_CLASS in browser.find_element("tag name", "body").text  # shown as text, never run
    assert browser.execute_script("return document.scripts.length") == 0
