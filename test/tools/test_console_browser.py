"""The operator console in a real headless Chromium, against the running simulated graph.

The page loads, shows vla_node's debug image and the suggestions; clicking suggestion 1 sends
"option 1", the history shows the status (which command it became) and the image updates.
Needs Debian's ``chromium`` and ``chromium-driver`` (``bash scripts/setup.sh --dev``); Selenium
drives that system browser and downloads nothing. Without them the test is skipped, except
under CI (``CI=true``), where a missing browser is a failure.
``CLIP_VLA_SCREENSHOT=docs/console.png`` also saves the README's screenshot.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("aiohttp")

SEED = 8000
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,860")


def _browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        why = f"{' and '.join(missing)} not installed (bash scripts/setup.sh --dev installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the console browser test cannot run under CI: {why}")
        pytest.skip(f"{why}; under CI=true this is a failure")
    return chromium, driver


@pytest.fixture
def browser():
    chromium, driver_path = _browser_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="clip_vla_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def console():
    from clip_vla.tools.demo import attached_console
    from clip_vla.testing.harness import oracle_graph

    with oracle_graph(SEED, "/console_test", 14) as graph:
        assert graph.driver.reset(SEED, "pick") is not None
        with attached_console(graph, port=0) as node:
            node.request_suggestions(wait_for_service=10.0)
            yield node


def wait_until(browser, condition, timeout=30.0, what=""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda d: condition(d), message=what)


def image_count(browser) -> int:
    return int(browser.find_element("id", "image").get_attribute("data-count") or 0)


def test_clicking_suggestion_one_runs_it_and_shows_the_status_and_a_new_image(browser, console):
    browser.get(console.url)
    first = wait_until(browser, lambda d: d.find_elements("css selector", 'button.suggestion[data-rank="1"]'),
                       what="no suggestion buttons")[0]
    wait_until(browser, lambda d: image_count(d) >= 1, what="no debug image")
    command = console.app.snapshot()["suggestions"]["suggestions"][0]["command"]
    assert command in first.text
    before = image_count(browser)

    first.click()
    row = wait_until(browser, lambda d: [r for r in d.find_elements("css selector", "#history li.status")
                                         if "option 1" in r.text], what="no status for option 1")[0]
    assert row.get_attribute("data-status") == "accepted", row.text
    assert f"option 1 = \u201c{command}\u201d" in row.text
    wait_until(browser, lambda d: image_count(d) > before, what="the image did not update")
    assert browser.find_element("id", "connection").text == "connected"

    target = os.environ.get("CLIP_VLA_SCREENSHOT")
    if target:
        time.sleep(0.5)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(target)


def test_a_typed_command_appears_in_the_history_with_its_status(browser, console):
    from selenium.webdriver.common.keys import Keys

    browser.get(console.url)
    box = wait_until(browser, lambda d: d.find_element("id", "command"))
    wait_until(browser, lambda d: d.find_element("id", "connection").text == "connected", what="no websocket")
    box.send_keys("option 99", Keys.ENTER)
    row = wait_until(browser, lambda d: [r for r in d.find_elements("css selector", "#history li.status")
                                         if "option 99" in r.text], what="no status for option 99")[0]
    assert row.get_attribute("data-status") == "unknown_option"
