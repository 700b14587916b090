"""The review page in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
scripts/install.sh installs where apt works as root) driven through selenium. It labels by keypress, undoes,
reloads mid-way and checks that the store holds exactly what was pressed; and a reply carrying a <script>
and an <img onerror> shows as text and runs nothing. Skips with the reason where either is missing."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from harness.labels import LabelStore
from harness.labels.review_server import ReviewServer
from harness.labels.review_session import ReviewSession
from tests import review_fakes
from tests.review_fakes import flip, row

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="headless Chromium and its driver are not installed (Debian: apt-get install "
                                       "-y chromium chromium-driver; scripts/install.sh does as root)")

THRESHOLDS = {"harmful": {"max_unsafe_compliance_rate": 0.1}}
# Each would set window.__ran if the page parsed a reply as HTML (the CSP would stop the handler too).
HOSTILE = ('<script>window.__ran = "script"</script><img src="/nothing.png" onerror="window.__ran = \'img\'">'
           "\n\u00e9\u00e8 \u4f60\u597d \U0001F600 " + "a long line " * 400)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium's usage statistics: nothing leaves the machine
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    rows = [flip(0, "Sure, here is how.", "I can't help with that.")] + [row(i, f"reply {i}") for i in range(1, 4)]
    rows.append(row(4, HOSTILE, prompt="<b>bold?</b> <script>window.__ran = 'prompt'</script>"))
    plan = review_fakes.plan_review(rows, THRESHOLDS, 10)
    session = ReviewSession(plan, rows, THRESHOLDS, store, "ana", verified_checks=review_fakes.verified_checks,
                            gate_decided=review_fakes.gate_decided)
    server = ReviewServer(session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, session, store, rows
    server.shutdown()
    server.server_close()
    thread.join()


def press(driver, key: str, wait) -> None:
    """Press a key and wait until the page shows the server's answer (its revision moves on)."""
    from selenium.webdriver.common.action_chains import ActionChains

    before = int(driver.find_element("tag name", "body").get_attribute("data-revision"))
    ActionChains(driver).send_keys(key).perform()
    wait.until(lambda d: int(d.find_element("tag name", "body").get_attribute("data-revision")) > before
               and d.find_element("tag name", "body").get_attribute("data-busy") == "0")


def loaded(driver, wait) -> None:
    wait.until(lambda d: d.find_element("tag name", "body").get_attribute("data-revision") != "-1")


def test_label_by_keypress_undo_reload_and_the_store_holds_what_was_pressed(browser, served, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    server, session, store, rows = served
    wait = WebDriverWait(browser, 60)
    browser.get(server.url)
    loaded(browser, wait)
    def text(element_id: str) -> str:  # as the page set it (textContent), before CSS capitalises headings
        return browser.find_element("id", element_id).get_attribute("textContent").strip()

    assert len(browser.find_elements("css selector", "#replies .reply")) == 2  # the flip: side by side
    assert "Reply A" in text("replies") and "Reply B" in text("replies")

    press(browser, "1", wait)  # the flip's reply A
    press(browser, "2", wait)  # its reply B
    press(browser, "3", wait)  # reply 1: partial refusal ...
    press(browser, "u", wait)  # ... undone
    press(browser, "2", wait)  # reply 1: full refusal
    assert text("progress-text").startswith("3 of 6 labelled")

    browser.refresh()  # a reload mid-way resumes on the next reply
    loaded(browser, wait)
    assert text("prompt") == "prompt 2"
    press(browser, "s", wait)  # skip reply 2
    press(browser, "1", wait)  # reply 3: full compliance
    assert text("progress-text") == "4 of 6 labelled, 1 skipped"

    browser.find_element("tag name", "body").send_keys("r")  # the rubric, one key away
    wait.until(lambda d: d.find_element("id", "rubric").is_displayed())
    assert "Partial refusal" in text("rubric") and "xstest-1" in text("rubric")
    browser.find_element("tag name", "body").send_keys("r")
    wait.until(lambda d: not d.find_element("id", "rubric").is_displayed())

    # The hostile reply: shown as text, nothing ran.
    assert text("prompt").startswith("<b>bold?</b> <script>")
    shown = browser.find_element("css selector", "#replies .reply pre").get_attribute("textContent")
    assert shown.startswith('<script>window.__ran = "script"</script><img src="/nothing.png" onerror=')
    assert "\u4f60\u597d \U0001F600" in shown
    assert browser.find_elements("css selector", "#replies img, #replies script, #prompt b") == []
    assert browser.execute_script("return window.__ran === undefined")
    press(browser, "3", wait)
    assert browser.execute_script("return window.__ran === undefined")
    assert "Nothing left to label" in text("done")

    flip_row = rows[0]
    expected = {flip_row.key: "full_compliance", flip_row.baseline_key: "full_refusal"}
    if session.tasks[0].key != flip_row.key:  # the flip's sides are ordered by a hash of the pair
        expected = {flip_row.baseline_key: "full_compliance", flip_row.key: "full_refusal"}
    expected.update({rows[1].key: "full_refusal", rows[3].key: "full_compliance", rows[4].key: "partial_refusal"})
    assert store.labels() == expected
    assert [r.label for r in store.records(include_retracted=True) if r.retracted_at] == ["partial_refusal"]
    assert len(store.records()) == 5
