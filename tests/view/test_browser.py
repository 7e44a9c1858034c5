"""The viewer in a real browser: headless Chromium through Selenium opens each page, clicks filters and
links, checks what is shown and that teacher output never runs as script; screenshots go to
$DISTILL_ARTIFACTS/view (or a temp folder). Without selenium or Chromium these tests skip, saying which;
tests/view/test_app.py checks the same pages over HTTP either way."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.view.seed import ATTR, SCRIPT


def _browser_paths() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need the selenium package (pinned in requirements.lock): pip install selenium")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("browser tests need headless Chromium and its driver: apt-get install -y --no-install-recommends "
                    "chromium chromium-driver")
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))  # no driver download
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    root = Path(os.environ["DISTILL_ARTIFACTS"]) if os.environ.get("DISTILL_ARTIFACTS") else \
        tmp_path_factory.mktemp("artifacts")
    (out := root / "view").mkdir(parents=True, exist_ok=True)
    return out


def _no_alert(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    pytest.fail(f"a dialog opened: {text!r}")


def _by(driver, css: str):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, css)


def _navigate(driver, act, to: str = "") -> None:
    """Run act (a click or submit that loads a page) and wait until the new page replaced the old one
    (and, given to, until the URL contains it: the runs page also reloads itself every 5 s): Selenium's
    click returns before a form's GET finishes, and a loaded CI machine showed the old URL."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
    old = driver.find_element(By.TAG_NAME, "html")
    act()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 30).until(lambda d: to in d.current_url
                                    and d.execute_script("return document.readyState") == "complete")


def _select(driver, name: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select
    Select(_by(driver, f"select[name={name}]")[0]).select_by_value(value)


def test_pool_filters_then_a_prompt_shows_teacher_output_as_text(browser, viewer, shots):
    browser.get(viewer.url)
    _navigate(browser, _by(browser, 'a[href="/pools/yesno"]')[0].click)
    assert len(_by(browser, "a.prompt-link")) == 50
    browser.save_screenshot(str(shots / "pool.png"))
    _select(browser, "teacher", "teacher-b")
    _select(browser, "outcome", "failed")
    _navigate(browser, _by(browser, "#apply")[0].click)
    assert "teacher=teacher-b" in browser.current_url and "outcome=failed" in browser.current_url
    links = _by(browser, "a.prompt-link")
    assert [a.text for a in links] == ["p-main"]
    browser.save_screenshot(str(shots / "pool-filtered.png"))
    _navigate(browser, links[0].click)
    _no_alert(browser)
    assert _by(browser, "#gold")[0].text == "No"
    assert _by(browser, "#sample-s-b1 .answer")[0].text == ATTR  # shown as the teacher wrote it
    assert SCRIPT in _by(browser, "#sample-s-b1 .reasoning")[0].text
    assert SCRIPT in _by(browser, "#sample-s-step1 .observation")[0].text
    assert not _by(browser, "img") and not _by(browser, "script")
    assert browser.execute_script("return document.querySelectorAll('[onerror]').length") == 0
    browser.save_screenshot(str(shots / "prompt.png"))


def test_prompt_links_lead_to_parents_and_the_dedup_cluster(browser, viewer, shots):
    browser.get(viewer.url + "prompts/p-main")
    _by(browser, '#sample-s-crit a[href="#sample-s-a1"]')[0].click()
    assert browser.current_url.endswith("#sample-s-a1")
    columns = _by(browser, "section.column")
    assert [c.find_element("css selector", "h3").text for c in columns] == ["teacher-a", "teacher-b"]
    assert columns[0].location["x"] < columns[1].location["x"]  # side by side
    assert len(_by(browser, "ol.timeline li")) >= 2  # the tool-call rollout
    _navigate(browser, _by(browser, 'a[href="/clusters/minhash/c-a1"]')[0].click)
    rows = _by(browser, "#members tr")[1:]
    assert rows[0].get_attribute("class") == "kept" and "s-a1" in rows[0].text
    assert "higher mean judge score" in rows[1].text
    assert [e.text.strip() for e in _by(browser, ".diff ins")] == ["much"]
    browser.save_screenshot(str(shots / "cluster.png"))


def test_paging_and_search(browser, viewer, shots):
    browser.get(viewer.url + "pools/yesno")
    _navigate(browser, _by(browser, 'a[rel="next"]')[0].click)
    assert "page=2" in browser.current_url and len(_by(browser, "a.prompt-link")) == 11
    box = _by(browser, "input[name=q]")[0]
    box.clear()
    box.send_keys("pear")
    _navigate(browser, box.submit)
    assert [a.text for a in _by(browser, "a.prompt-link")] == ["p-main"]
    browser.save_screenshot(str(shots / "search.png"))


def test_runs_show_a_live_run_and_refresh_themselves(browser, viewer, seeded, shots):
    browser.get(viewer.url + "runs")
    running = _by(browser, "tr.status-running")[0]
    assert "8 done" in running.text and "RateLimitError 1" in running.text
    assert _by(browser, 'meta[http-equiv="refresh"]')
    _no_alert(browser)
    browser.save_screenshot(str(shots / "runs.png"))
    link = running.find_element("css selector", "a")
    _navigate(browser, link.click, to=link.get_attribute("href"))
    assert "$0.0800" in _by(browser, "#progress")[0].text
    browser.save_screenshot(str(shots / "run-live.png"))


def test_an_eval_shows_its_plots_and_filters_queries(browser, viewer, shots):
    browser.get(viewer.url + "evals/eval-test")
    images = _by(browser, "figure img")
    assert len(images) == 3
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
               for i in images)
    _select(browser, "escalated", "yes")
    _select(browser, "student", "right")
    _navigate(browser, _by(browser, "#apply")[0].click)
    rows = _by(browser, "#queries tr")[1:]
    assert len(rows) == 5 and all("(right)" in r.text for r in rows)
    _no_alert(browser)
    browser.save_screenshot(str(shots / "eval.png"))


def test_pairs_side_by_side(browser, viewer, shots):
    browser.get(viewer.url + "pairs")
    chosen, rejected = _by(browser, ".column.chosen")[0], _by(browser, ".column.rejected")[0]
    assert chosen.location["x"] < rejected.location["x"] and chosen.location["y"] == rejected.location["y"]
    assert ATTR in rejected.text and "s-a1" in chosen.text
    _no_alert(browser)
    browser.save_screenshot(str(shots / "pairs.png"))
