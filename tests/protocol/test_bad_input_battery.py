"""Bad input of every kind against a real server process: each gets a clear error
(or a clean close), changes nothing, and every other connection goes on working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest

from distqueue import codec
from distqueue.protocol.commands import COMMANDS
from distqueue.protocol.resp import encode_command
from tests.procs import Peer, ServerProc


def code(reply: Any) -> str:
    assert isinstance(reply, hiredis.ReplyError), f"expected an error, got {reply!r}"
    return str(reply).split()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    proc = ServerProc(tmp_path_factory.mktemp("bad") / "data", "--max-payload", "1000000")
    yield proc
    proc.stop()


@pytest.fixture
def peer(server: ServerProc) -> Iterator[Peer]:
    p = Peer(server)
    yield p
    p.close()


@pytest.fixture
def witness(server: ServerProc) -> Iterator[Peer]:
    """A second connection, opened before the bad input, checked after it."""
    p = Peer(server)
    assert p.call("PING") == b"PONG"
    yield p
    assert p.call("PING") == b"PONG"
    job_id = p.call("SUBMIT", "echo", "still here")
    assert codec.loads(p.call("STATUS", job_id))["args"] == "still here"
    p.close()


def jobs(peer: Peer) -> dict[str, int]:
    return codec.loads(peer.call("STATS"))["jobs"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "frame",
    [b"*2\r\n$3\r\nfoo\r\n:x\r\n", b"*1\r\n$abc\r\n", b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",
     b"*1\r\n-ERR x\r\n", b"*1\r\n$-5\r\n", b"SUBMIT 'unbalanced\r\n", b"x" * 70_000],
)  # fmt: skip
def test_malformed_frames_get_proto_and_a_close(peer: Peer, witness: Peer, frame: bytes) -> None:
    before = jobs(witness)
    peer.send(frame)
    assert code(peer.reply()) == "PROTO"
    assert peer.closed()
    assert jobs(witness) == before


@pytest.mark.parametrize("line", [b"FROB\r\n", b"frob 1 2\r\n", b"*1\r\n$4\r\nNOPE\r\n"])
def test_unknown_commands(peer: Peer, witness: Peer, line: bytes) -> None:
    peer.send(line)
    assert code(peer.reply()) == "UNKNOWN"
    assert peer.call("PING") == b"PONG"  # the connection stays open


def _wrong_counts() -> list[tuple[str, int]]:
    cases = []
    for verb, command in COMMANDS.items():
        if command.min_args > 0:
            cases.append((verb.decode(), command.min_args - 1))
        if command.max_args is not None:
            cases.append((verb.decode(), command.max_args + 1))
    return cases


@pytest.mark.parametrize(("verb", "nargs"), _wrong_counts())
def test_wrong_argument_counts(peer: Peer, witness: Peer, verb: str, nargs: int) -> None:
    if verb in ("FETCH", "ACK", "FAIL", "PROGRESS", "BEAT", "BYE"):
        assert isinstance(peer.call("HELLO", 1, "ROLE", "worker", "TYPES", "echo"), bytes)
    before = jobs(witness)
    reply = peer.call(verb, *(["1"] * nargs))
    assert code(reply) == "ARGS" and "wrong number of arguments" in str(reply)
    assert jobs(witness) == before


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "1.5", "99999999999999999999999", str(2**63)])
def test_bad_ids(peer: Peer, bad: str) -> None:
    assert code(peer.call("STATUS", bad)) in ("ARGS", "NOTFOUND")
    assert code(peer.call("CANCEL", bad)) in ("ARGS", "NOTFOUND")


def test_unknown_ids(peer: Peer) -> None:
    for verb in ("STATUS", "RESULT", "WAIT", "CANCEL", "RETRY", "PURGE"):
        assert code(peer.call(verb, 424242)) == "NOTFOUND"


@pytest.mark.parametrize(
    "spec",
    [b"{not json", b'{"type": "echo", "priorty": 1}', b'{"args": 1}',
     b'{"type": "echo", "priority": 4294967296}', b'{"type": "echo", "priority": -1}',
     b'{"type": "echo", "priority": "urgent"}', b'{"type": "echo", "priority": true}',
     b'{"type": "echo", "retries": -1}', b'{"type": "has space"}', b"[]", b"[1, 2]",
     b'{"type": "echo", "delay": -1}', b'{"type": "echo", "timeout": "soon"}'],
)  # fmt: skip
def test_invalid_specs_store_nothing(peer: Peer, witness: Peer, spec: bytes) -> None:
    before = jobs(witness)
    assert code(peer.call("SUBMIT", spec)) == "INVALID"
    assert jobs(witness) == before


def test_one_bad_spec_in_a_batch_stores_none(peer: Peer, witness: Peer) -> None:
    before = jobs(witness)
    batch = codec.dumps([{"type": "echo", "args": "ok"}, {"type": "echo", "retries": "x"}])
    reply = peer.call("SUBMIT", batch)
    assert code(reply) == "INVALID" and "job 1" in str(reply)
    assert code(peer.call("SUBMIT", '[{"type": "echo", "payload": true}]')) == "INVALID"
    assert code(peer.call("SUBMIT", '{"type": "echo"}', b"extra")) == "ARGS"
    assert jobs(witness) == before


def test_unknown_type_is_refused_unless_asked(peer: Peer, witness: Peer) -> None:
    before = jobs(witness)
    reply = peer.call("SUBMIT", "wordcont", "x")
    assert code(reply) == "NOTYPE" and "wordcount" in str(reply)
    assert jobs(witness) == before
    job_id = peer.call("SUBMIT", '{"type": "wordcont", "check_type": false}')
    assert codec.loads(peer.call("STATUS", job_id))["state"] == "queued"


def test_payload_over_the_limit_is_refused_before_it_is_all_sent(server: ServerProc) -> None:
    peer = Peer(server)
    header = b"*3\r\n$6\r\nSUBMIT\r\n$34\r\n" + b'{"type": "gzip", "payload": true }' + b"\r\n"
    peer.send(header + b"$5000000\r\n")
    sent = 0
    chunk = b"x" * 65536
    try:
        while sent < 2_000_000:  # less than half of the declared 5 MB
            peer.send(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server already closed it: fine, it answered first
    reply = peer.reply()
    assert code(reply) == "TOOBIG"
    peer.close()
    # just under the limit goes through whole
    ok = Peer(server)
    payload = bytes(range(256)) * 3500  # 896,000 bytes
    job_id = ok.call("SUBMIT", '{"type": "gzip", "payload": true}', payload)
    assert codec.loads(ok.call("STATUS", job_id))["payload_size"] == len(payload)
    ok.close()


def test_silent_and_half_sent_clients_do_not_block_others(
    server: ServerProc, witness: Peer
) -> None:
    silent = Peer(server)  # connects and says nothing
    half = Peer(server)
    half.send(b'*2\r\n$6\r\nSUBMIT\r\n$40\r\n{"type": "echo"')  # stalls mid-frame
    quitter = Peer(server)
    quitter.send(b"*3\r\n$6\r\nSUBMIT\r\n$4\r\necho\r\n$5\r\nhel")  # vanishes mid-frame
    quitter.close()
    before = jobs(witness)
    assert witness.call("PING") == b"PONG"
    assert jobs(witness) == before  # the half-sent submits stored nothing
    silent.close()
    half.close()


def test_worker_commands_need_a_worker(peer: Peer) -> None:
    for verb, args in (("FETCH", []), ("ACK", [1, 1]), ("FAIL", [1, 1, "{}"]), ("BEAT", []),
                       ("BYE", []), ("PROGRESS", [1, 1, 5])):  # fmt: skip
        assert code(peer.call(verb, *args)) == "ROLE"


def test_stale_and_bad_worker_reports_change_nothing(server: ServerProc, peer: Peer) -> None:
    job_id = peer.call("SUBMIT", '{"type": "bench.hold", "check_type": false}')
    wa = Peer(server)
    wa.call("HELLO", 1, "ROLE", "worker", "ID", "wa", "TYPES", "bench.hold")
    [[_, token_a, _, _]] = wa.call("FETCH", 1, 1)
    wa.close()  # vanished: the job goes back
    wb = Peer(server)
    wb.call("HELLO", 1, "ROLE", "worker", "ID", "wb", "TYPES", "bench.hold")
    [[got, token_b, _, _]] = wb.call("FETCH", 1, 5)
    assert got == job_id and token_b == token_a + 1
    ghost = Peer(server)
    ghost.call("HELLO", 1, "ROLE", "worker", "ID", "wa", "TYPES", "bench.hold")
    assert code(ghost.call("ACK", job_id, token_a, '"late"')) == "STALE"
    assert code(ghost.call("ACK", 999_999, 1)) == "NOTFOUND"
    assert code(wb.call("ACK", job_id, token_b, "{not json")) == "INVALID"
    assert code(wb.call("FAIL", job_id, token_b, '{"message": "no kind"}')) == "INVALID"
    assert code(wb.call("ACK", job_id, token_b, '"x"', "xml")) == "ARGS"
    status = codec.loads(peer.call("STATUS", job_id))
    assert (status["state"], status["worker"]) == ("running", "wb")
    assert wb.call("ACK", job_id, token_b, '"done"') == b"OK"
    ghost.close()
    wb.close()


@pytest.mark.parametrize(
    "hello",
    [["HELLO", 4], ["HELLO", 1, "COLOUR", "red"], ["HELLO", 1, "ROLE", "worker"],
     ["HELLO", 1, "ROLE", "worker", "TYPES", "bad type"], ["HELLO", 1, "ROLE", "boss"],
     ["HELLO", 1, "ROLE", "worker", "TYPES", "echo", "CONCURRENCY", "-1"]],
)  # fmt: skip
def test_bad_hellos(peer: Peer, hello: list[Any]) -> None:
    assert code(peer.call(*hello)) == "ARGS"
    assert peer.call("PING") == b"PONG"


def test_hello_only_once(peer: Peer) -> None:
    assert isinstance(peer.call("HELLO", 1), bytes)
    assert code(peer.call("HELLO", 1)) == "ROLE"


def test_results_and_states_refused_clearly(peer: Peer) -> None:
    queued = peer.call("SUBMIT", '{"type": "bench.hold", "check_type": false}')
    assert code(peer.call("RESULT", queued)) == "PENDING"
    assert code(peer.call("WAIT", queued, "0.2")) == "TIMEOUT"
    assert code(peer.call("RETRY", queued)) == "STATE"
    assert code(peer.call("PURGE", queued)) == "STATE"
    assert peer.call("CANCEL", queued) == b"cancelled"
    assert code(peer.call("CANCEL", queued)) == "STATE"
    assert code(peer.call("RESULT", queued)) == "FAILED"
    assert code(peer.call("LIST", "STATE", "sleeping")) == "ARGS"
    assert code(peer.call("LIST", "LIMIT", "5000")) == "ARGS"
    assert code(peer.call("LIST", "LIMIT")) == "ARGS"


def test_pipelined_mix_gets_every_reply_in_order(peer: Peer) -> None:
    commands = []
    for i in range(200):
        commands.append(["PING", f"p{i}"] if i % 3 else ["FROB", i])
    peer.send(b"".join(encode_command(*c) for c in commands))
    for i in range(200):
        reply = peer.reply()
        if i % 3:
            assert reply == f"p{i}".encode()
        else:
            assert code(reply) == "UNKNOWN"


def test_with_a_token_nothing_but_authentication(tmp_path: Path) -> None:
    server = ServerProc(tmp_path / "data", "--token", "s3cret")
    try:
        good = Peer(server)
        assert good.call("AUTH", "s3cret") == b"OK"
        job_id = good.call("SUBMIT", "echo", "guarded")
        before = codec.loads(good.call("STATS"))["jobs"]
        bad = Peer(server)
        for command in (["SUBMIT", "echo", "x"], ["STATUS", job_id], ["CANCEL", job_id],
                        ["LIST"], ["STATS"], ["FETCH"], ["FROB"], ["RETRY", job_id]):  # fmt: skip
            assert code(bad.call(*command)) == "AUTH"
        assert code(bad.call("AUTH", "wrong")) == "AUTH"
        assert code(bad.call("HELLO", 1, "TOKEN", "wrong")) == "AUTH"
        assert bad.call("PING") == b"PONG"
        assert codec.loads(good.call("STATS"))["jobs"] == before
        assert codec.loads(good.call("STATUS", job_id))["state"] == "queued"
        assert isinstance(bad.call("HELLO", 1, "TOKEN", "s3cret"), bytes)
        assert codec.loads(bad.call("STATUS", job_id))["args"] == "guarded"
        bad.close()
        good.close()
    finally:
        server.stop()


def _flow_state(peer: Peer) -> tuple[Any, ...]:
    return (codec.loads(peer.call("LIMIT", "LIST")), codec.loads(peer.call("PAUSED", "ENDS")),
            codec.loads(peer.call("SCHEDULE", "LIST")), jobs(peer))  # fmt: skip


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["LIMIT", "SET", "tube", "t", "CONCURRENCY", "2"], "ARGS"),
        (["LIMIT", "SET", "type", "t", "CONCURRENCY", "0"], "INVALID"),
        (["LIMIT", "SET", "type", "t", "CONCURRENCY", "lots"], "INVALID"),
        (["LIMIT", "SET", "type", "t", "RATE", "5/fortnight"], "INVALID"),
        (["LIMIT", "SET", "type", "t", "RATE", "x/s"], "INVALID"),
        (["LIMIT", "SET", "type", "t", "MAX_DEPTH", "5"], "INVALID"),
        (["LIMIT", "SET", "queue", "*", "CONCURRENCY", "5"], "INVALID"),
        (["LIMIT", "SET", "type", "has space", "CONCURRENCY", "5"], "INVALID"),
        (["LIMIT", "SET", "type", "t", "SPEED", "5"], "ARGS"),
        (["LIMIT", "SET", "type", "t", "CONCURRENCY"], "ARGS"),
        (["LIMIT", "FROB"], "ARGS"),
        (["PAUSE", "bad queue"], "INVALID"),
        (["PAUSE", "bad queue", "10"], "INVALID"),
        (["PAUSE", "q", "0"], "ARGS"),
        (["PAUSE", "q", "-5"], "ARGS"),
        (["PAUSE", "q", "nan"], "ARGS"),
        (["PAUSE", "q", "inf"], "ARGS"),
        (["PAUSE", "q", "1e12"], "ARGS"),
        (["PAUSE", "q", "soon"], "ARGS"),
        (["PAUSE", "q", "5", "6"], "ARGS"),
        (["RESUME", "q", "5"], "ARGS"),
        (["PAUSED", "WHEN"], "ARGS"),
        (["SCHEDULE", "ADD", "s", "not json"], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "61 * * * *", "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "* * * * *", "every": 5, "job": {"type": "echo"}}'],
         "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"every": 0, "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"every": true, "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "* * * * *", "timezone": "Mars/Base",'
          ' "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "* * * * *", "job": {"type": "echo", "delay": 5}}'],
         "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "* * * * *"}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "* * * * *", "job": {"type": "echo"}, "x": 1}'],
         "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": "* * * * *", "catch_up": "twice",'
          ' "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "bad name", '{"every": 5, "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": 5, "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"cron": ["*"], "job": {"type": "echo"}}'], "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"every": 5, "job": {"type": "echo", "payload": true}}'],
         "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"every": 5, "timezone": "", "job": {"type": "echo"}}'],
         "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"every": 5, "timezone": 3, "job": {"type": "echo"}}'],
         "INVALID"),
        (["SCHEDULE", "ADD", "s", '{"every": 5, "job": {"type": "wordcont"}}'], "NOTYPE"),
        (["SCHEDULE", "REMOVE", "nothing-here"], "INVALID"),
        (["SCHEDULE", "PAUSE", "nothing-here"], "INVALID"),
        (["SUBMIT", '{"type": "echo", "after": [999999999]}'], "INVALID"),
        (["SUBMIT", '{"type": "echo", "after": ["x"]}'], "INVALID"),
        (["SUBMIT", '{"type": "echo", "after": [1, 1]}'], "INVALID"),
        (["SUBMIT", '{"type": "echo", "after": 0}'], "INVALID"),
        (["SUBMIT", '{"type": "echo", "after": ' + str(list(range(1, 102))) + "}"], "INVALID"),
        (["SUBMIT", '{"type": "echo", "on_failure": "run"}'], "INVALID"),
        (["SUBMIT", '{"type": "echo", "pass_results": true}'], "INVALID"),
    ],
)  # fmt: skip
def test_bad_flow_control_changes_nothing(
    peer: Peer, witness: Peer, command: list[str], expected: str
) -> None:
    before = _flow_state(witness)
    assert code(peer.call(*command)) == expected
    assert _flow_state(witness) == before
    assert peer.call("PING") == b"PONG"


def test_a_timed_pause_as_the_protocol_says(peer: Peer) -> None:
    """PAUSE queue seconds: PAUSED ENDS gives its end; RESUME ends it now."""
    import time

    before = time.time()
    assert peer.call("PAUSE", "timed", "600") == b"OK"
    assert peer.call("PAUSE", "open") == b"OK"
    ends = codec.loads(peer.call("PAUSED", "ENDS"))
    assert set(ends) == {"timed", "open"} and ends["open"] is None
    assert before + 600 <= ends["timed"] <= time.time() + 600
    assert peer.call("PAUSED") == [b"open", b"timed"]
    assert peer.call("RESUME", "timed") == b"OK"
    assert peer.call("RESUME", "open") == b"OK"
    assert codec.loads(peer.call("PAUSED", "ENDS")) == {}
