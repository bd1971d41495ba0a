"""A real server and a real worker process, driven by the client library."""

from __future__ import annotations

from distqueue.client import Client


def test_submit_run_result(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = worker_proc(server.address)
    worker.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit("wordcount", "hello brave new world")
        assert client.result(job_id, wait=20) == 4
        assert client.status(job_id).worker == worker.id
