"""The dashboard over plain HTTP (no browser): pages, filters, keyset paging, actions,
CSRF, login, escaping, headers, the event stream."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import urllib.parse
import urllib.request
from typing import Any

import pytest

from distqueue.errors import JobNotFound
from distqueue.web.app import CSP
from tests.procs import wait_until
from tests.web.conftest import AdminServer, Http

PAGES = ["/", "/jobs", "/dead", "/workers"]


def rows(body: bytes) -> list[int]:
    """The job ids of a list page's rows, in order."""
    return [int(i) for i in re.findall(rb'<tr data-job="(\d+)"', body)]


def csrf_of(body: bytes) -> str:
    m = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert m, "no CSRF field on the page"
    return m.group(1).decode()


def older_link(body: bytes) -> str | None:
    m = re.search(rb'<a href="([^"]+)" rel="next" data-older>', body)
    return None if m is None else m.group(1).decode().replace("&amp;", "&")


def flash(body: bytes) -> str:
    m = re.search(rb'<p class="flash flash-(\w+)" role="status" data-flash>(.*?)</p>', body, re.S)
    assert m, "no flash message on the page"
    return f"{m.group(1).decode()}: {m.group(2).decode()}"


def follow(http: Http, status: int, headers: dict[str, str]) -> bytes:
    assert status == 303, status
    code, _, body = http.get(headers["Location"])
    assert code == 200, (headers["Location"], code, body[:500])
    return body


def submit(srv: AdminServer, specs: list[dict[str, Any]]) -> list[int]:
    with srv.client() as c:
        return c.submit_many(specs)


def state_of(srv: AdminServer, job_id: int) -> str:
    with srv.client() as c:
        return c.status(job_id).state.value


def test_every_page_answers_with_its_content_and_headers(admin_server: Any) -> None:
    srv = admin_server()
    ids = submit(srv, [{"type": "echo", "args": f"job {n}", "queue": "nobody"} for n in range(3)])
    srv.wait_snapshot(lambda s: s["jobs"]["queued"] == 3)
    http = Http(srv.url)
    expected = {
        "/": [b"<h1>Overview", b'data-count="queued">3<', b'data-queue="nobody"',
              b'id="chart"', b"Throughput"],
        "/jobs": [b"<h1>Jobs</h1>", b'<tr data-job="3"', b'<a href="/jobs/1">1</a>'],
        "/dead": [b"<h1>Dead letters</h1>", b"No dead letters."],
        "/workers": [b"<h1>Workers</h1>", b"No workers."],
        f"/jobs/{ids[0]}": [b"<h1>Job 1 ", b"&#34;job 0&#34;", b'data-action="cancel"',
                            b"not a history of each attempt"],
    }  # fmt: skip
    for path, parts in expected.items():
        status, headers, body = http.get(path)
        assert status == 200, (path, status)
        assert headers["Content-Type"] == "text/html; charset=utf-8", path
        assert headers["Content-Security-Policy"] == CSP, path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert b"<script>" not in body and b" style=" not in body, path  # CSP: no inline
        assert b'<script src="/static/dashboard.js" defer></script>' in body, path
        for part in parts:
            assert part in body, (path, part)
    assert rows(http.get("/jobs")[2]) == [3, 2, 1]
    static = [("dashboard.css", ("text/css",)), ("favicon.svg", ("image/svg+xml",)),
              ("dashboard.js", ("text/javascript", "application/javascript"))]  # fmt: skip
    for name, kinds in static:
        status, headers, body = http.get(f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kinds), (name, headers)
        assert headers["Content-Security-Policy"] == CSP
    status, _, body = http.get("/jobs/999")
    assert status == 404 and b"no job 999" in body
    assert http.get("/jobs/abc")[0] == 404
    assert http.get("/jobs/99999999999999999999")[0] == 404


def test_filters_and_keyset_pagination(admin_server: Any) -> None:
    srv = admin_server()
    specs = [
        {"type": "echo" if n % 3 else "wordcount", "args": str(n),
         "queue": "even" if n % 2 == 0 else "odd"}
        for n in range(1, 121)
    ]  # fmt: skip
    ids = submit(srv, specs)
    assert ids == list(range(1, 121))
    with srv.client() as c:
        for job_id in (5, 6, 7):
            assert c.cancel(job_id) == "cancelled"
    http = Http(srv.url)

    # all jobs: three pages of 50, 50, 20, newest first, each cursor the last id shown
    status, _, body = http.get("/jobs")
    assert status == 200 and rows(body) == list(range(120, 70, -1))
    assert older_link(body) == "/jobs?before=71"
    assert b'rel="first"' not in body
    body = http.get("/jobs?before=71")[2]
    assert rows(body) == list(range(70, 20, -1))
    assert older_link(body) == "/jobs?before=21"
    assert b'<a href="/jobs" rel="first">' in body
    body = http.get("/jobs?before=21")[2]
    assert rows(body) == list(range(20, 0, -1))
    assert older_link(body) is None and b"no older jobs" in body
    # exactly one page's worth: no older link to an empty page
    body = http.get("/jobs?before=51")[2]
    assert rows(body) == list(range(50, 0, -1)) and older_link(body) is None

    # filters, alone and together, and paging keeps them
    body = http.get("/jobs?queue=even")[2]
    assert rows(body) == list(range(120, 20, -2))
    assert older_link(body) == "/jobs?queue=even&before=22"
    assert rows(http.get("/jobs?queue=even&before=22")[2]) == list(range(20, 0, -2))
    wordcount = [n for n in range(120, 0, -1) if n % 3 == 0]
    assert rows(http.get("/jobs?type=wordcount")[2]) == wordcount
    assert rows(http.get("/jobs?type=wordcount&queue=odd")[2]) == [n for n in wordcount if n % 2]
    assert rows(http.get("/jobs?state=cancelled")[2]) == [7, 6, 5]
    body = http.get("/jobs?state=cancelled&queue=odd")[2]
    assert rows(body) == [7, 5]
    assert b'<option value="cancelled" selected>' in body
    assert rows(http.get("/jobs?state=queued&before=9")[2]) == [8, 4, 3, 2, 1]
    assert rows(http.get("/jobs?state=succeeded")[2]) == []

    # an id jumps to its page; bad input is a message, not an error page
    status, headers, _ = http.get("/jobs?id=17")
    assert status == 303 and headers["Location"] == "/jobs/17"
    status, _, body = http.get("/jobs?state=bogus")
    assert status == 200 and b"no state &#39;bogus&#39;" in body and rows(body) == []
    status, _, body = http.get("/jobs?queue=a%20b")
    assert status == 200 and b"queue must be" in body and rows(body) == []
    status, _, body = http.get("/jobs?before=x")
    assert status == 200 and b"before must be a job id" in body
    status, headers, _ = http.get("/jobs?id=x1")
    assert status == 303 and "msg=" in headers["Location"]


def test_post_without_csrf_is_refused_and_changes_nothing(admin_server: Any) -> None:
    srv = admin_server()
    [job_id] = submit(srv, [{"type": "echo", "args": "x", "queue": "nobody"}])
    http = Http(srv.url)
    token = csrf_of(http.get(f"/jobs/{job_id}")[2])
    assert http.cookie("dq_csrf") == token
    # no token; a wrong one; the right one without its cookie (a cross-site form)
    assert http.post(f"/jobs/{job_id}/cancel", {})[0] == 403
    assert http.post(f"/jobs/{job_id}/cancel", {"csrf": token + "x"})[0] == 403
    assert Http(srv.url).post(f"/jobs/{job_id}/cancel", {"csrf": token})[0] == 403
    assert http.post("/dead/bulk", {"action": "purge", "ids": [job_id]})[0] == 403
    assert state_of(srv, job_id) == "queued"
    # with it: done, and back to the page with a message
    status, headers, _ = http.post(f"/jobs/{job_id}/cancel", {"csrf": token})
    assert headers["Location"] == f"/jobs/{job_id}?msg=Job+{job_id}+cancelled."
    body = follow(http, status, headers)
    assert flash(body) == f"ok: Job {job_id} cancelled."
    assert state_of(srv, job_id) == "cancelled"


def test_actions_and_their_refusals(admin_server: Any) -> None:
    srv = admin_server()
    a, b = submit(srv, [{"type": "echo", "args": "x", "queue": "nobody"}] * 2)
    http = Http(srv.url)
    token = csrf_of(http.get(f"/jobs/{a}")[2])

    # refusals are messages on the page, never a traceback
    body = follow(http, *http.post(f"/jobs/{a}/retry", {"csrf": token})[:2])
    assert flash(body).startswith(f"error: Cannot retry job {a}: ")
    assert b"Traceback" not in body
    body = follow(http, *http.post(f"/jobs/{a}/purge", {"csrf": token})[:2])
    assert flash(body).startswith(f"error: Cannot purge job {a}: ")
    status, headers, _ = http.post("/jobs/777/cancel", {"csrf": token})
    assert headers["Location"].startswith("/jobs?msg=")
    body = follow(http, status, headers)
    assert flash(body) == "error: Cannot cancel job 777: no job 777"
    assert state_of(srv, a) == "queued"

    # cancel, retry (a cancelled job), cancel again, purge: each as its button does
    body = follow(http, *http.post(f"/jobs/{a}/cancel", {"csrf": token})[:2])
    assert flash(body) == f"ok: Job {a} cancelled."
    assert b'data-action="retry"' in body and b'data-action="purge"' in body
    assert b'data-action="cancel"' not in body
    body = follow(http, *http.post(f"/jobs/{a}/retry", {"csrf": token})[:2])
    assert flash(body) == f"ok: Job {a} queued again." and state_of(srv, a) == "queued"
    http.post(f"/jobs/{a}/cancel", {"csrf": token})
    status, headers, _ = http.post(f"/jobs/{a}/purge", {"csrf": token, "next": "/jobs"})
    assert headers["Location"] == f"/jobs?msg=Job+{a}+purged."
    assert rows(follow(http, status, headers)) == [b]
    with srv.client() as c, pytest.raises(JobNotFound):
        c.status(a)
    # a next= that leaves the site goes home instead
    status, headers, _ = http.post(f"/jobs/{b}/cancel", {"csrf": token, "next": "//evil.example/"})
    assert status == 303 and headers["Location"].startswith("/?msg=")


def test_dead_letters_bulk_and_per_row(admin_server: Any, workers: Any) -> None:
    srv = admin_server()
    workers(srv)
    # sleep with a non-number dies at once (InvalidJob: permanent)
    dead = submit(srv, [{"type": "sleep", "args": f"x{n}", "queue": "default"} for n in range(6)])
    srv.wait_snapshot(lambda s: s["jobs"]["dead"] == 6)
    [alive] = submit(srv, [{"type": "echo", "args": "x", "queue": "nobody"}])
    http = Http(srv.url)
    status, _, body = http.get("/dead")
    assert status == 200 and rows(body) == dead[::-1]
    assert body.count(b'<span class="error-kind">InvalidJob</span>') == 6
    token = csrf_of(body)

    # bulk retry of two: queued again, dead again at once (the worker is there)
    status, headers, _ = http.post(
        "/dead/bulk", {"csrf": token, "action": "retry", "ids": [dead[0], dead[1]],
                       "next": "/dead"})  # fmt: skip
    assert flash(follow(http, status, headers)) == "ok: Retried 2 of 2 jobs."
    with srv.client() as c:
        wait_until(lambda: c.status(dead[0]).attempts == 2 and c.status(dead[0]).state.value
                   == "dead", 20, "the retried job to die again")  # fmt: skip
    # bulk purge of two, one of them not finished: one done, one refused
    status, headers, _ = http.post(
        "/dead/bulk", {"csrf": token, "action": "purge", "ids": [dead[2], alive]}
    )
    assert flash(follow(http, status, headers)).startswith(
        f"error: Purged 1 of 2 jobs. Refused: job {alive}: "
    )
    assert state_of(srv, alive) == "queued"
    # per row: the row's own buttons post to the job's route with the page as next
    status, headers, _ = http.post(f"/jobs/{dead[3]}/purge", {"csrf": token, "next": "/dead"})
    assert headers["Location"] == f"/dead?msg=Job+{dead[3]}+purged."
    assert rows(follow(http, status, headers)) == [dead[5], dead[4], dead[1], dead[0]]
    # the limits
    status, headers, _ = http.post(
        "/dead/bulk", {"csrf": token, "action": "purge", "ids": list(range(1, 502))}
    )
    assert flash(follow(http, status, headers)) == "error: At most 500 jobs at once, not 501."
    status, headers, _ = http.post("/dead/bulk", {"csrf": token, "action": "purge"})
    assert flash(follow(http, status, headers)) == "error: No jobs selected."
    status, headers, _ = http.post("/dead/bulk", {"csrf": token, "action": "drop", "ids": [1]})
    assert flash(follow(http, status, headers)) == "error: Choose retry or purge."
    status, headers, _ = http.post("/dead/bulk", {"csrf": token, "action": "retry", "ids": ["1x"]})
    assert flash(follow(http, status, headers)) == "error: Job ids are numbers."
    assert rows(http.get("/dead")[2]) == [dead[5], dead[4], dead[1], dead[0]]


def test_token_login_bearer_and_open_probes(admin_server: Any) -> None:
    srv = admin_server(token="s3cret-token")
    http = Http(srv.url)
    for path in PAGES:
        status, headers, _ = http.get(path)
        assert status == 303 and headers["Location"] == f"/login?next={path}", path
    status, headers, _ = http.get("/jobs?state=dead")
    assert headers["Location"] == "/login?next=/jobs?state=dead"
    assert http.get("/jobs", headers={"Accept": "application/json"})[0] == 401
    assert http.get("/events", headers={"Accept": "text/event-stream"})[0] == 401
    assert http.post("/jobs/1/cancel", {"csrf": "x"})[0] == 401
    assert http.get("/livez", headers={"Accept": "*/*"})[:3:2] == (200, b"ok\n")
    status, _, body = http.get("/login?next=/jobs")
    assert status == 200 and b'name="next" value="/jobs"' in body

    # a wrong token is refused, and gives no session
    status, headers, _ = http.post("/login", {"token": "wrong", "next": "/jobs"})
    assert status == 303 and headers["Location"].startswith("/login?error=1")
    assert b"Wrong token." in http.get(headers["Location"])[2]
    assert http.get("/jobs")[0] == 303
    # the right one: a session cookie, then every page
    status, headers, _ = http.post("/login", {"token": "s3cret-token", "next": "/jobs"})
    assert status == 303 and headers["Location"] == "/jobs"
    assert http.cookie("dq_session") is not None
    for path in PAGES:
        status, _, body = http.get(path)
        assert status == 200, path
    # a bearer header works without a session (and needs no CSRF token: no cookie rides)
    [job_id] = submit(srv, [{"type": "echo", "args": "x", "queue": "nobody"}])
    bearer = Http(srv.url)
    auth = {"Authorization": "Bearer s3cret-token"}
    for path in [*PAGES, f"/jobs/{job_id}"]:
        assert bearer.get(path, headers=auth)[0] == 200, path
    assert bearer.get("/jobs", headers={"Authorization": "Bearer nope"})[0] == 303
    status, headers, _ = bearer.post(f"/jobs/{job_id}/cancel", {}, headers=auth)
    assert status == 303 and state_of(srv, job_id) == "cancelled"


def test_job_data_is_escaped_everywhere(admin_server: Any, workers: Any) -> None:
    srv = admin_server()
    workers(srv)
    script = "<script>alert(1)</script>"
    img = "<img src=x onerror=alert(1)>"
    queued, dying = submit(srv, [
        {"type": "echo", "args": script, "queue": "nobody"},
        {"type": "sleep", "args": img, "queue": "default"},
    ])  # fmt: skip
    srv.wait_snapshot(lambda s: s["jobs"]["dead"] == 1)
    http = Http(srv.url)
    body = http.get(f"/jobs/{queued}")[2]
    assert script.encode() not in body
    assert (
        b'<pre class="json" data-field="args">&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;</pre>'
    ) in body
    body = http.get(f"/jobs/{dying}")[2]
    assert img.encode() not in body and b"<img" not in body
    assert b"&lt;img src=x onerror=alert(1)&gt;" in body
    assert (
        b'data-field="error-message">sleep takes a number of seconds (0-86400), not'
        b" &#39;&lt;img src=x onerror=alert(1)&gt;&#39;</pre>"
    ) in body
    for path in ["/dead", "/jobs"]:
        body = http.get(path)[2]
        assert b"<img" not in body and b"<script>" not in body, path
    assert b"&#39;&lt;img src=x onerror=alert(1)&gt;&#39;" in http.get("/dead")[2]
    # a flash message from the query string is text too
    body = http.get(f"/jobs?msg={urllib.parse.quote(script)}&level=error")[2]
    assert script.encode() not in body
    assert b"data-flash>&lt;script&gt;alert(1)&lt;/script&gt;</p>" in body


def test_results_payloads_and_workers(admin_server: Any, workers: Any) -> None:
    srv = admin_server(lease=3.0)  # the worker hears of a cancel at its next beat: lease/3
    worker = workers(srv, "-q", "default,slow", "-c", "2")
    data = b"distqueue " * 1000
    zipped, echoed, slow = submit(srv, [
        {"type": "gzip", "payload": data},
        {"type": "echo", "args": "hello"},
        {"type": "sleep", "args": 60, "queue": "slow"},
    ])  # fmt: skip
    http = Http(srv.url)
    with srv.client() as c:
        result = c.result(zipped, wait=20)
        assert gzip.decompress(result) == data
        assert c.result(echoed, wait=20) == "hello"
        wait_until(lambda: c.status(slow).state.value == "running", 20, "the slow job to run")
    body = http.get(f"/jobs/{zipped}")[2]
    shown = f'data-field="result">Bytes, {len(result)} bytes: <a href="/jobs/{zipped}/result"'
    assert shown.encode() in body
    assert b"<dt>payload</dt><dd>9.8 KiB <a" in body
    status, headers, got = http.get(f"/jobs/{zipped}/result")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == f'attachment; filename="job-{zipped}-result.bin"'
    assert got == result
    status, headers, got = http.get(f"/jobs/{zipped}/payload")
    assert status == 200 and got == data
    body = http.get(f"/jobs/{echoed}")[2]
    assert b'<pre class="json" data-field="result">&#34;hello&#34;</pre>' in body
    status, headers, got = http.get(f"/jobs/{echoed}/result")
    assert headers["Content-Type"] == "application/json" and json.loads(got) == "hello"
    assert http.get(f"/jobs/{slow}/result")[0] == 400

    # the worker, with the job it holds as a link
    body = http.get("/workers")[2]
    assert f'<tr data-worker="{worker.id}">'.encode() in body
    assert f'<a href="/jobs/{slow}" data-held="{slow}">{slow}</a>'.encode() in body
    assert b'<span class="tag">gzip</span>' in body and b'<span class="tag">slow</span>' in body
    body = http.get(f"/jobs/{slow}")[2]
    assert f'<dd class="name">{worker.id}</dd>'.encode() in body
    assert b"<dt>lease until</dt><dd><time" in body
    # cancelling a running job asks its worker to stop it
    token = csrf_of(body)
    status, headers, _ = http.post(f"/jobs/{slow}/cancel", {"csrf": token})
    assert flash(follow(http, status, headers)) == (
        f"ok: Job {slow} is running: asked its worker to stop it."
    )
    with srv.client() as c:
        wait_until(lambda: c.status(slow).state.value == "cancelled", 20, "the cancel")


def events(url: str, n: int) -> tuple[Any, list[dict[str, Any]]]:
    """Open /events and read its first ``n`` data events; the open response too."""
    resp = urllib.request.urlopen(url + "/events", timeout=20)
    assert resp.headers["Content-Type"] == "text/event-stream"
    got = []
    while len(got) < n:
        line = resp.readline()
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            got.append(json.loads(line[6:]))
    return resp, got


def test_event_stream_follows_the_snapshot_and_ends_with_the_server(admin_server: Any) -> None:
    srv = admin_server()
    resp, [first] = events(srv.url, 1)
    assert set(first) == {"version", "store", "jobs", "totals", "queues", "rates", "workers",
                          "point", "uptime"}  # fmt: skip
    assert first["store"]["ok"] is True and first["jobs"]["queued"] == 0
    submit(srv, [{"type": "echo", "args": "x", "queue": "nobody"}] * 4)
    while True:  # one event per snapshot, versions rising, until the jobs show
        line = resp.readline()
        assert line
        if line.startswith(b"data: "):
            event = json.loads(line[6:])
            assert event["version"] > first["version"]
            if event["jobs"]["queued"] == 4:
                break
    assert event["queues"] == {"nobody": {"queued": 4}}
    assert event["point"][4] == 4 and event["totals"]["submitted"] == 4
    # a stream ends when its client goes away (it notices at the next snapshot)
    resp.close()

    async def streams() -> int:
        return sum(t.get_coro().__qualname__ == "RequestHandler.start" for t in asyncio.all_tasks())

    wait_until(lambda: srv.call(streams) == 0, 10, "the closed stream's handler to end")
    # an open stream does not hold the server's stop up to the shutdown timeout (1 s)
    other, _ = events(srv.url, 1)
    assert srv.call(streams) == 1
    srv.stop()
    assert srv.stop_seconds is not None and srv.stop_seconds < 0.9, srv.stop_seconds
    assert other.read().endswith(b"\n")  # the stream ends (no hang, no reset)


def test_workers_page_lists_the_store_registry(admin_server: Any) -> None:
    srv = admin_server()
    store = srv.server.service.store
    if not hasattr(store, "note_worker"):
        pytest.skip("this store has no worker registry yet: the page lists this server's own")
    [job_id] = submit(srv, [{"type": "echo", "args": "x", "queue": "far"}])
    info = {
        "name": "<b>far-away</b>", "host": "host-7", "pid": 4242, "types": ["echo", "gzip"],
        "queues": ["far"], "concurrency": 3, "server": "10.0.0.9:7700", "since": 1700000000.0,
    }  # fmt: skip

    async def note() -> None:
        now = srv.server.service.clock()
        await store.note_worker("w-remote", info, now)
        await store.claim("w-remote", 1, now, queues=["far"], types=["echo"], lease=60.0)

    srv.call(note)
    body = Http(srv.url).get("/workers")[2]
    assert b"the store's registry" in body
    assert rows_of_workers(body) == ["w-remote"]
    assert b'<td class="name">&lt;b&gt;far-away&lt;/b&gt;</td>' in body
    assert b'<td class="name">host-7 / 4242</td>' in body
    assert b'<span class="tag">echo</span> <span class="tag">gzip</span>' in body
    assert b'<td class="num">3</td>' in body
    assert f'<a href="/jobs/{job_id}" data-held="{job_id}">{job_id}</a>'.encode() in body
    assert b'<td class="name">10.0.0.9:7700</td>' in body
    assert b"2023-11-14 22:13:20.000" in body  # since, UTC


def rows_of_workers(body: bytes) -> list[str]:
    return [w.decode() for w in re.findall(rb'<tr data-worker="([^"]+)">', body)]
