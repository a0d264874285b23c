"""The page in a real headless Chromium (Debian's `chromium` and `chromium-driver`), against a real
`vqsearch serve` on the three sample videos: a person types a query, gives a photo, or draws a box
on a frame, and sees the last sighting with its box.

Selenium is given the driver's path, so Selenium Manager never downloads one. Without Chromium
the tests skip, except under CI, where skipping would prove nothing. The last screenshot is
written to the test's folder, and also to $VQSEARCH_SCREENSHOT when set (the README's docs/serve.png).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from vqsearch.serve.spawn import served

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WAIT = 120  # seconds: relocation decodes video, and the machine may be busy


def _need(found: str | None, what: str) -> str:
    """Skip where the browser is absent, except under CI (as conftest.need_shared)."""
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing under CI: bash scripts/setup.sh installs it")
        pytest.skip(f"{what} not installed (bash scripts/setup.sh installs it)")
    return found


@pytest.fixture(scope="module")
def url(sample_db: Path):
    with served(sample_db) as address:
        yield address


@pytest.fixture(scope="module")
def browser():
    chromium = _need(shutil.which("chromium"), "Debian's chromium")
    driver_path = _need(shutil.which("chromedriver"), "Debian's chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(None, "selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1300", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def text_of(browser, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector).text


def wait_for(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.2).until(condition, message=f"the page never showed {what}")


def ask(browser, url: str, text: str = "", crop: Path | None = None) -> None:
    """Open the page, give the query and search; wait for the tight boxes of the last sighting."""
    from selenium.webdriver.common.by import By

    browser.get(url + "/")
    wait_for(browser, lambda b: b.find_element(By.ID, "pick-open").is_enabled(), "the library")
    if text:
        browser.find_element(By.ID, "text").send_keys(text)
    if crop is not None:
        browser.find_element(By.ID, "crop-file").send_keys(str(crop))
    browser.find_element(By.ID, "search-button").click()
    wait_for_answer(browser)


def wait_for_answer(browser) -> None:
    wait_for(browser, lambda b: text_of(b, "#last-video"), "a last-seen card")
    wait_for(browser, lambda b: "tight box" in text_of(b, "#box-state"), "the refined boxes")


def shown_boxes(browser) -> list[dict]:
    """The boxes drawn over frames of the last-seen card (player and strip): shown, their frame
    image loaded, and their width as a share of the frame's."""
    return browser.execute_script("""
        return [...document.querySelectorAll('#last-seen .frame')].map(f => {
          const box = f.querySelector('.box'), img = f.querySelector('img'), r = box.getBoundingClientRect();
          return {visible: !box.hidden && r.width > 2 && r.height > 2, loaded: img.complete && img.naturalWidth > 0,
                  share: r.width / f.getBoundingClientRect().width};
        });""")


def no_page_errors(browser) -> None:
    assert text_of(browser, "#message") == "", text_of(browser, "#message")
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def test_a_text_query_shows_the_mug_video_with_a_box(browser, url):
    ask(browser, url, text="coffee mug")
    assert text_of(browser, "#last-video") == "04_coffee.mp4"
    wait_for(browser, lambda b: all(box["loaded"] for box in shown_boxes(b)), "the frames")
    boxes = shown_boxes(browser)
    assert len(boxes) == 7 and all(box["visible"] for box in boxes)  # the player and a strip of six
    assert "04_coffee.mp4" in text_of(browser, "#timelines") and text_of(browser, "#results")
    no_page_errors(browser)


def test_a_photo_of_the_ball_shows_its_reappearance(browser, url, ball_crop, tmp_path):
    ask(browser, url, crop=ball_crop)
    assert text_of(browser, "#last-video") == "02_cups.mp4"
    start, end = (float(t) for t in re.findall(r"[\d.]+", text_of(browser, "#last-window")))
    assert 9.3 <= start <= end <= 10.0  # frames 280-299: the ball revealed at the end
    wait_for(browser, lambda b: all(box["loaded"] for box in shown_boxes(b)), "the frames")
    boxes = shown_boxes(browser)
    assert all(box["visible"] and box["share"] < 0.1 for box in boxes)  # the ball (6 % of the width), not a cup
    no_page_errors(browser)
    shot = tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 50_000
    if os.environ.get("VQSEARCH_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["VQSEARCH_SCREENSHOT"])


def test_a_box_drawn_on_a_frame_is_the_query(browser, url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(url + "/")
    wait_for(browser, lambda b: b.find_element(By.ID, "pick-open").is_enabled(), "the library")
    browser.find_element(By.ID, "pick-open").click()  # the first video, 02_cups.mp4, at frame 0
    wait_for(browser, lambda b: b.execute_script("return document.querySelector('#pick-area img').naturalWidth"),
             "the frame to draw on")
    area = browser.find_element(By.ID, "pick-area")
    scale = area.size["width"] / 1280
    corner = (round(366 * scale - area.size["width"] / 2), round(428 * scale - area.size["height"] / 2))
    ActionChains(browser).move_to_element_with_offset(area, *corner).click_and_hold() \
        .move_by_offset(round(72 * scale), round(70 * scale)).release().perform()  # around the ball
    browser.find_element(By.ID, "pick-use").click()
    wait_for_answer(browser)
    assert text_of(browser, "#last-video") == "02_cups.mp4"
    assert "02_cups-frame0.png" in text_of(browser, "#status")
    no_page_errors(browser)


def test_a_server_with_a_token_asks_for_it_then_answers(browser, sample_db):
    from selenium.webdriver.common.by import By

    with served(sample_db, "--token", "page-token") as address:
        browser.get(address + "/")
        browser.execute_script("localStorage.clear()")
        browser.get(address + "/")
        wait_for(browser, lambda b: b.find_element(By.ID, "token-form").is_displayed(), "the token field")
        assert "needs its token" in text_of(browser, "#message")
        browser.find_element(By.ID, "token").send_keys("page-token")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(browser, lambda b: b.find_element(By.ID, "pick-open").is_enabled(), "the library")
        browser.find_element(By.ID, "text").send_keys("ball")
        browser.find_element(By.ID, "search-button").click()
        wait_for_answer(browser)
        assert text_of(browser, "#last-video") == "02_cups.mp4"
        wait_for(browser, lambda b: all(box["loaded"] for box in shown_boxes(b)), "the frames, asked with the token")
        browser.get_log("browser")  # the 401 before the token was given is expected
        assert text_of(browser, "#message") == ""
