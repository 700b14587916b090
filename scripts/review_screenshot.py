"""Take the screenshot of the review page in docs/review.md (docs/review.png), in headless Chromium.

    python scripts/review_screenshot.py --out docs/review.png
    python scripts/review_screenshot.py --report run.parquet --baseline base.parquet --out docs/review.png

With --report, the page is the one `safety-harness review REPORT` serves (harness.engine.verification's plan
and checks). Without it, the page shows the embedded model's own XSTest replies from
research/labels/smollm2_135m_suites_sample.csv under their prompts (read from the XSTest data), in the
file's order and without the thresholds panel; the first two are labelled with the file's labels, so the
progress bar has moved. A temporary label store is used either way. Needs selenium, chromium and
chromedriver (scripts/install.sh).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "research" / "labels" / "smollm2_135m_suites_sample.csv"


@dataclass(frozen=True)
class Row:  # the fields of harness.engine.verification.VerifyRow the page reads
    key: str
    suite: str
    category: str
    prompt_id: str
    expected: str
    prompt: str
    input: str
    response: str
    scored_label: str = ""
    baseline_key: str | None = None
    baseline_response: str | None = None
    baseline_scored_label: str | None = None


def sample_session(store):
    """The embedded model's labelled XSTest replies, in the sample file's order; no checks."""
    from harness.core.paths import data_dir_from_env
    from harness.core.records import label_key
    from harness.data.suites import get_suite
    from harness.labels.review_session import ReviewSession

    prompts = {p.prompt_id: p for p in get_suite("xstest").load(data_dir_from_env())}
    with open(SAMPLE, newline="", encoding="utf-8") as f:
        labelled = [r for r in csv.DictReader(f) if r["suite"] == "xstest"]
    rows = [Row(label_key(prompts[r["prompt_id"]].prompt, r["response"]), "xstest", prompts[r["prompt_id"]].category,
                r["prompt_id"], prompts[r["prompt_id"]].expected, prompts[r["prompt_id"]].prompt, "", r["response"])
            for r in labelled]
    session = ReviewSession(rows, rows, {}, store, "reviewer", verified_checks=lambda *a, **k: [],
                            gate_decided=lambda checks: False, report=str(SAMPLE.relative_to(REPO)))
    for task, r in zip(session.tasks[:2], labelled):
        session.label(task.id, r["label"])
    return session


def report_session(store, report: Path, baseline: Path | None, n: int):
    from harness.engine import verification
    from harness.labels.review_session import ReviewSession

    rows = verification.rows_from_report(report, baseline)
    thresholds = verification.thresholds_from_report(report)
    plan = verification.plan_for_report(report, n, baseline_path=baseline, known={})  # as `review` plans it
    return ReviewSession(plan, rows, thresholds, store, "reviewer", verified_checks=verification.verified_checks,
                         gate_decided=verification.gate_decided, report=str(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "review.png", help="PNG to write")
    parser.add_argument("--report", type=Path, default=None, help="a run's Parquet report to review")
    parser.add_argument("--baseline", type=Path, default=None, help="its baseline's report (flips side by side)")
    parser.add_argument("--n", type=int, default=60, help="replies to plan (with --report)")
    parser.add_argument("--height", type=int, default=None,
                        help="window height in pixels (default 860; 1240 with --report, so the thresholds panel shows)")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from harness.labels import LabelStore
    from harness.labels.review_server import ReviewServer

    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite")
        session = (report_session(store, args.report, args.baseline, args.n) if args.report
                   else sample_session(store))
        server = ReviewServer(session)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        height = args.height or (1240 if args.report else 860)
        options = Options()
        options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--hide-scrollbars", f"--window-size=1280,{height}", f"--user-data-dir={Path(tmp) / 'profile'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
        try:
            driver.get(server.url)
            WebDriverWait(driver, 60).until(
                lambda d: d.find_element("tag name", "body").get_attribute("data-revision") != "-1")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
