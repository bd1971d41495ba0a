"""The dashboard in a real headless Chromium (Playwright's sync API, Debian's
/usr/bin/chromium; never a downloaded browser): pages, filters, retrying a dead
letter, cancelling, live counters over Server-Sent Events, XSS payloads that must
stay text, no CSP violations, and the overview screenshot of docs/dashboard.png.

Without a working Chromium these tests skip, saying why; with
DISTQUEUE_REQUIRE_BROWSER=1 (CI) they fail instead."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import CLI, Proc, wait_until
from tests.web.conftest import AdminServer

CHROMIUM = os.environ.get("DISTQUEUE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
TIMEOUT = 20_000  # ms, for Playwright's waits

TASKS = '''
import os

import distqueue

FLAG = os.environ["DQ_WEB_FLAG"]


@distqueue.task(name="flaky")
def flaky(n):
    """Fails while the flag file exists (with markup in its message), then doubles n."""
    if os.path.exists(FLAG):
        raise RuntimeError("<img src=x onerror=alert(1)> the flag file is there")
    return n * 2
'''


def _no_browser(why: str) -> None:
    if os.environ.get("DISTQUEUE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DISTQUEUE_REQUIRE_BROWSER=1 but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _no_browser(f"playwright is not installed ({exc}): pip install 'distqueue[test]'")
    if not os.path.exists(CHROMIUM):
        _no_browser(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:
            _no_browser(f"Chromium ({CHROMIUM}) did not launch: {exc}")
        yield launched
        launched.close()


class Site:
    """One server with its admin port and one worker serving the built-ins and a
    ``flaky`` task on queues default and live."""

    def __init__(self, root: Path) -> None:
        (root / "dq_web_tasks.py").write_text(TASKS)
        self.flag = root / "flag"
        self.server = AdminServer(root / "data")
        path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
        self.worker = Proc(
            [*CLI, "worker", "--server", self.server.address, "--tasks", "dq_web_tasks",
             "-q", "default,live", "-c", "8"],
            env={"PYTHONPATH": path, "DQ_WEB_FLAG": str(self.flag)},
        )  # fmt: skip
        self.worker.wait_for(r"distqueue worker (\S+) serving")
        self.url = self.server.url

    def submit(self, *specs: dict[str, Any]) -> list[int]:
        with self.server.client() as c:
            return c.submit_many(list(specs))

    def state(self, job_id: int) -> str:
        with self.server.client() as c:
            return c.status(job_id).state.value

    def wait_state(self, job_id: int, state: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.state(job_id) == state, timeout, f"job {job_id} {state}")

    def quiet(self) -> dict[str, Any]:
        """Wait until the served queues have nothing ready or running; the stats."""

        def check(stats: dict[str, Any]) -> bool:
            busy = ("queued", "running", "retrying")
            return all(
                not any(counts.get(s, 0) for s in busy)
                for name, counts in stats["queues"].items()
                if name in ("default", "live")
            )

        return self.server.wait_snapshot(check)

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("dashboard"))
    yield s
    s.stop()


class Watched:
    """A page whose console errors, uncaught errors and dialogs are recorded."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

        def dialog(d: Any) -> None:
            self.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", dialog)


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT)
    w = Watched(context.new_page())
    yield w
    context.close()
    # a CSP violation (an inline script or style, a foreign origin) is a console error
    assert w.errors == [], f"console errors: {w.errors}"


def expect() -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=TIMEOUT)
    return pw_expect


def row_ids(page: Any) -> list[int]:
    return [int(x) for x in page.locator("tr[data-job]").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-job'))")]  # fmt: skip


def test_every_page_loads(site: Site, watched: Watched) -> None:
    page, check = watched.page, expect()
    [job_id] = site.submit({"type": "echo", "args": "hello", "queue": "nobody"})
    pages = [("/", "Overview"), ("/jobs", "Jobs"), ("/dead", "Dead letters"),
             ("/workers", "Workers"), (f"/jobs/{job_id}", f"Job {job_id}")]  # fmt: skip
    for path, heading in pages:
        response = page.goto(site.url + path)
        assert response is not None and response.status == 200, path
        check(page.locator("h1")).to_contain_text(heading)
        check(page.locator("link[rel=stylesheet]")).to_have_count(1)
    # the stylesheet applied (CSP let it load): the header bar has its colour
    color = page.evaluate("getComputedStyle(document.querySelector('header.top')).backgroundColor")
    assert color == "rgb(31, 78, 121)"
    check(page.locator("[data-field=args]")).to_have_text('"hello"')
    page.goto(site.url + "/workers")
    check(page.locator("tr[data-worker]")).to_have_count(1)
    check(page.locator("tr[data-worker] .tag", has_text="flaky")).to_have_count(1)
    assert watched.dialogs == []


def test_filter_jobs_by_state(site: Site, watched: Watched) -> None:
    page, check = watched.page, expect()
    ids = site.submit(*[{"type": "echo", "args": str(n), "queue": "filtering"} for n in range(5)])
    with site.server.client() as c:
        for job_id in (ids[1], ids[3]):
            assert c.cancel(job_id) == "cancelled"
    page.goto(site.url + "/jobs")
    page.select_option("select[name=state]", "cancelled")
    page.fill("input[name=queue]", "filtering")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/jobs?state=cancelled&queue=filtering**")
    check(page.locator("tr[data-job]")).to_have_count(2)
    assert row_ids(page) == [ids[3], ids[1]]
    check(page.locator("tr[data-job] span.state")).to_have_text(["cancelled", "cancelled"])
    page.select_option("select[name=state]", "queued")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/jobs?state=queued&queue=filtering**")
    check(page.locator("tr[data-job]")).to_have_count(3)
    assert row_ids(page) == [ids[4], ids[2], ids[0]]
    # an id in the filter jumps to the job
    page.fill("input[name=id]", str(ids[2]))
    page.click("form.filters button[type=submit]")
    page.wait_for_url(f"**/jobs/{ids[2]}")
    check(page.locator("h1")).to_contain_text(f"Job {ids[2]}")


def test_dead_letter_retried_from_the_page_succeeds(site: Site, watched: Watched) -> None:
    page, check = watched.page, expect()
    site.flag.write_text("fail")
    [job_id] = site.submit({"type": "flaky", "args": [21], "retries": 0})
    site.wait_state(job_id, "dead")
    page.goto(site.url + "/dead")
    row = page.locator(f"tr[data-job='{job_id}']")
    check(row.locator(".error-kind")).to_have_text("RuntimeError")
    check(row.locator(".error-message")).to_contain_text("<img src=x onerror=alert(1)>")
    site.flag.unlink()  # from now on it succeeds
    row.locator("input[name=ids]").check()
    page.click("button[name=action][value=retry]")
    page.wait_for_url("**/dead?msg=**")
    check(page.locator("[data-flash]")).to_have_text("Retried 1 of 1 jobs.")
    # the job page, reloaded until it shows the success
    page.goto(f"{site.url}/jobs/{job_id}")
    deadline = time.monotonic() + 20
    while page.locator("[data-field=state]").text_content() != "succeeded":
        assert time.monotonic() < deadline, "the retried job did not succeed"
        time.sleep(0.2)
        page.reload()
    check(page.locator("[data-field=result]")).to_have_text("42")
    check(page.locator("[data-field=attempts]")).to_have_text("2")
    check(page.locator("[data-field=error-message]")).to_contain_text("the flag file is there")
    assert watched.dialogs == []


def test_cancel_a_queued_job_from_its_page(site: Site, watched: Watched) -> None:
    page, check = watched.page, expect()
    [job_id] = site.submit({"type": "echo", "args": "wait", "queue": "nobody"})
    page.goto(f"{site.url}/jobs/{job_id}")
    check(page.locator("[data-field=state]")).to_have_text("queued")
    page.click("button[data-action=cancel]")
    page.wait_for_url(f"**/jobs/{job_id}?msg=**")
    check(page.locator("[data-flash]")).to_have_text(f"Job {job_id} cancelled.")
    check(page.locator("[data-field=state]")).to_have_text("cancelled")
    check(page.locator("button[data-action=retry]")).to_have_count(1)
    check(page.locator("button[data-action=cancel]")).to_have_count(0)
    assert site.state(job_id) == "cancelled"


def test_live_counters_follow_the_queue(site: Site, watched: Watched) -> None:
    page, check = watched.page, expect()
    [first] = site.submit({"type": "echo", "args": "first", "queue": "live"})
    site.wait_state(first, "succeeded")
    stats = site.quiet()
    succeeded, total = stats["jobs"]["succeeded"], stats["totals"]["succeeded"]
    page.goto(site.url + "/")
    check(page.locator("[data-live-status]")).to_have_text("live")  # the stream is open
    counter = page.locator("[data-count=succeeded]")
    check(counter).to_have_text(str(succeeded))
    live_cell = page.locator("a[data-queue=live][data-state=succeeded]")
    check(live_cell).to_have_text("1")
    site.submit(*[{"type": "echo", "args": str(n), "queue": "live"} for n in range(7)])
    # no reload: the numbers change under the open page
    check(counter).to_have_text(str(succeeded + 7))
    check(page.locator("[data-total=succeeded]")).to_have_text(str(total + 7))
    check(live_cell).to_have_text("8")
    # a queue that appears gets its row, with links, without a reload
    site.submit(*[{"type": "echo", "args": "x", "queue": "appearing"}] * 2)
    cell = page.locator("a[data-queue=appearing][data-state=queued]")
    check(cell).to_have_text("2")
    check(cell).to_have_attribute("href", "/jobs?queue=appearing&state=queued")
    check(page.locator("strong[data-queue=appearing]")).to_have_text("2")
    queued = site.server.wait_snapshot(lambda s: True)["jobs"]["queued"]
    check(page.locator("[data-count=queued]")).to_have_text(str(queued))


def test_xss_payloads_stay_text(site: Site, watched: Watched) -> None:
    page, check = watched.page, expect()
    script, img = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"
    held, dying = site.submit(
        {"type": "echo", "args": script, "queue": "nobody"},
        {"type": "sleep", "args": img},
    )
    site.wait_state(dying, "dead")
    page.goto(f"{site.url}/jobs/{held}")
    check(page.locator("[data-field=args]")).to_have_text(f'"{script}"')
    page.goto(f"{site.url}/jobs/{dying}")
    check(page.locator("[data-field=args]")).to_have_text(f'"{img}"')
    check(page.locator("[data-field=error-message]")).to_have_text(
        f"sleep takes a number of seconds (0-86400), not '{img}'"
    )
    for path in ["/dead", "/jobs", f"/jobs?msg={script}"]:
        page.goto(site.url + path)
        check(page.locator("main img")).to_have_count(0)
        check(page.locator("script")).to_have_count(1)  # dashboard.js, nothing else
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert watched.dialogs == []


def _load(site: Site, seconds: float) -> None:
    """Jobs at a varying rate for a while: quick ones, slower ones, a few that die."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        burst = [{"type": "sleep", "args": 0.05 + (n % 4) * 0.05} for _ in range(4 + n % 6)]
        burst += [{"type": "echo", "args": f"job {n}"} for _ in range(6)]
        if n % 3 == 0:
            burst.append({"type": "sleep", "args": "not a number"})
        site.submit(*burst)
        time.sleep(0.4)


def test_overview_screenshot(site: Site, watched: Watched, tmp_path: Path) -> None:
    page, check = watched.page, expect()
    site.submit(*[{"type": "echo", "args": str(n), "queue": "reports"} for n in range(12)])
    site.submit(*[{"type": "sleep", "args": 1, "queue": "batch", "priority": 0}] * 5)
    page.goto(site.url + "/")
    check(page.locator("[data-live-status]")).to_have_text("live")
    loader = threading.Thread(target=_load, args=(site, 5.0))
    loader.start()
    loader.join()
    stats = site.quiet()
    time.sleep(1.5)  # the last points reach the chart
    check(page.locator("[data-count=succeeded]")).to_have_text(str(stats["jobs"]["succeeded"]))
    check(page.locator("[data-count=dead]")).to_have_text(str(stats["jobs"]["dead"]))
    out = tmp_path / "dashboard.png"
    page.screenshot(path=str(out), full_page=True)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1280  # the viewport's width
    if os.environ.get("DISTQUEUE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(out, SCREENSHOT)
        print(f"wrote {SCREENSHOT}", file=sys.stderr)
