"""The web rater's JSON API over real HTTP on 127.0.0.1 (ephemeral port): flows, bad input, tokens, headers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.human.conftest import http
from textgym.human.server import MAX_BODY, RatingServer, make_server


def test_rate_each_kind_end_to_end(server, store):
    a, b = store.add_samples([{"prompt": "p", "completion": "one two", "tokens": ["one", " two"]},
                              {"prompt": "p", "completion": "three"}])
    status, got, _ = http(server.url + "api/samples/next?rater=ann")
    assert status == 200 and got["sample"]["id"] == a and got["stats"]["pending"] == 2
    status, got, _ = http(server.url + "api/ratings", "POST", {"sample_id": a, "rater": "ann", "score": 5})
    assert status == 201 and got["rating"]["score"] == 5 and got["stats"] == {"samples": 2, "pending": 1,
                                                                               "ratings": 1, "scale": [1.0, 5.0]}
    assert http(server.url + "api/samples/next?rater=ann")[1]["sample"]["id"] == b
    assert http(server.url + "api/samples/next?rater=ann&skip=2")[1]["sample"] is None
    got = http(server.url + "api/samples/next?rater=bob&mode=tokens")[1]["sample"]
    assert got["tokens"] == ["one", " two"]
    assert http(server.url + "api/ratings", "POST", {"sample_id": a, "rater": "bob", "token_scores": [1, -1]})[0] == 201
    pair = http(server.url + "api/samples/next?rater=cat&mode=pair")[1]["pair"]
    assert [s["id"] for s in pair] == [a, b]
    assert http(server.url + "api/ratings", "POST", {"sample_id": a, "other_id": b, "rater": "cat",
                                                     "preferred": b})[0] == 201
    assert http(server.url + "api/samples/next?rater=cat&mode=pair")[1]["pair"] is None
    # pending = no rating by anyone; the preference rated both samples
    assert http(server.url + "api/stats")[1] == {"samples": 2, "pending": 0, "ratings": 3, "scale": [1.0, 5.0]}
    kinds = [(r.rater, r.kind) for r in store.ratings()]
    assert kinds == [("ann", "score"), ("bob", "tokens"), ("cat", "preference")]


def test_retry_with_same_uid_counts_once(server, store):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    body = {"sample_id": 1, "rater": "ann", "score": 3, "uid": "click-1"}
    assert http(server.url + "api/ratings", "POST", body)[0] == 201
    assert http(server.url + "api/ratings", "POST", body)[0] == 201
    assert len(store.ratings()) == 1


def _bad_requests():
    ok = {"sample_id": 1, "rater": "ann", "score": 3}
    return [
        ("score above scale", dict(ok, score=6), None, 400, "within the scale"),
        ("score below scale", dict(ok, score=0), None, 400, "within the scale"),
        ("score not a number", dict(ok, score="3"), None, 400, "number"),
        ("unknown sample id", dict(ok, sample_id=999), None, 404, "unknown sample id 999"),
        ("unknown other id", {"sample_id": 1, "other_id": 999, "rater": "ann", "preferred": 1}, None, 404, "999"),
        ("no rater", {"sample_id": 1, "score": 3}, None, 400, "'rater'"),
        ("no rating", {"sample_id": 1, "rater": "ann"}, None, 400, "exactly one"),
        ("two ratings", dict(ok, token_scores=[0, 0]), None, 400, "exactly one"),
        ("unknown field", dict(ok, extra=1), None, 400, "unknown fields"),
        ("wrong token_scores length", {"sample_id": 1, "rater": "ann", "token_scores": [1]}, None, 400, "2 tokens"),
        ("token score out of range", {"sample_id": 1, "rater": "ann", "token_scores": [1, 3]}, None, 400, "-1..1"),
        ("prefer a third sample", {"sample_id": 1, "other_id": 2, "rater": "ann", "preferred": 3}, None, 400, "one of"),
        ("malformed JSON", None, b'{"sample_id": 1,', 400, "malformed JSON"),
        ("JSON not an object", None, b"[1, 2]", 400, "JSON object"),
        ("oversized body", None, b'{"rater": "' + b"x" * MAX_BODY + b'"}', 413, "too large"),
    ]


@pytest.mark.parametrize("name, body, raw, status, message", _bad_requests(), ids=[r[0] for r in _bad_requests()])
def test_bad_input_gets_4xx_and_changes_nothing(server, store, name, body, raw, status, message):
    store.add_samples([{"prompt": "p", "completion": "a b", "tokens": ["a", " b"]},
                       {"prompt": "p", "completion": "c"}, {"prompt": "q", "completion": "d"}])
    store.add_rating(3, "bob", score=2)
    before = (store.stats(), [r.to_dict() for r in store.ratings(include_retracted=True)])
    got_status, got, headers = http(server.url + "api/ratings", "POST", body, raw=raw)
    assert got_status == status and message in got["error"], got
    assert headers["Content-Type"] == "application/json"
    assert (store.stats(), [r.to_dict() for r in store.ratings(include_retracted=True)]) == before


def test_duplicate_rating_is_409(server, store):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    assert http(server.url + "api/ratings", "POST", {"sample_id": 1, "rater": "ann", "score": 3})[0] == 201
    status, got, _ = http(server.url + "api/ratings", "POST", {"sample_id": 1, "rater": "ann", "score": 4})
    assert status == 409 and "already rated" in got["error"]
    assert [r.score for r in store.ratings()] == [3.0]


def test_wrong_method_content_type_and_paths(server, store):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    assert http(server.url + "api/ratings")[0] == 405
    assert http(server.url + "api/nope")[0] == 404
    assert http(server.url + "etc/passwd")[0] == 404
    status, got, _ = http(server.url + "api/ratings", "POST", raw=b'{"sample_id": 1, "rater": "a", "score": 3}',
                          headers={"Content-Type": "text/plain"})
    assert status == 415 and store.ratings() == []
    assert http(server.url + "api/samples/next?mode=xyz")[0] == 400
    assert http(server.url + "api/samples/next?skip=a,b")[0] == 400


def test_security_headers_and_page(server):
    for path in ("", "app.js", "api/stats"):
        status, _, headers = http(server.url + path)
        assert status == 200
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    page = http(server.url)[1]
    assert 'id="progress"' in page and "app.js" in page
    js = http(server.url + "app.js")[1]
    assert "innerHTML" not in js and "textContent" in js  # model text is only ever set as text


def test_script_in_completion_is_returned_as_data(server, store):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    store.add_samples([{"prompt": evil, "completion": evil}])
    status, got, headers = http(server.url + "api/samples/next")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert got["sample"]["completion"] == evil  # JSON data, rendered by the page with textContent


def test_foreign_host_header_refused_without_token(server):
    status, got, _ = http(server.url + "api/stats", headers={"Host": "evil.example:80"})
    assert status == 403 and "127.0.0.1" in got["error"]


def test_token_required_when_set(store):
    srv = make_server(store, port=0, token="s3cret", quiet=True)
    srv.start_background()
    try:
        store.add_samples([{"prompt": "p", "completion": "c"}])
        body = {"sample_id": 1, "rater": "ann", "score": 3}
        status, got, _ = http(srv.url + "api/ratings", "POST", body)
        assert status == 401 and "token" in got["error"]
        status, got, _ = http(srv.url + "api/ratings", "POST", body, headers={"Authorization": "Bearer wrong"})
        assert status == 401 and "wrong access token" in got["error"]
        assert http(srv.url + "api/stats")[0] == 401
        assert store.ratings() == []
        good = {"Authorization": "Bearer s3cret"}
        assert http(srv.url + "api/ratings", "POST", body, headers=good)[0] == 201
        assert http(srv.url + "api/stats", headers=good)[1]["ratings"] == 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_refuses_public_bind_without_token(store, capsys):
    with pytest.raises(ValueError, match="without an access token"):
        RatingServer(store, host="0.0.0.0", port=0)
    from agents.cli import main as cli_main
    assert cli_main(["serve", str(store.path), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_public_bind_with_token(store):
    srv = RatingServer(store, host="0.0.0.0", port=0, token="t", quiet=True)
    srv.start_background()
    try:
        port = srv.server_address[1]
        status, got, _ = http(f"http://127.0.0.1:{port}/api/stats", headers={"Authorization": "Bearer t"})
        assert status == 200 and got["samples"] == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_oversized_body_not_read(server):
    # a huge Content-Length is refused from the header alone: the server does not wait for the body
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(b"POST /api/ratings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")
        chunks = []
        while chunk := s.recv(4096):  # the server closes the connection after the reply
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 413") and "too large" in json.loads(reply.split("\r\n\r\n", 1)[1])["error"]


# -- connections: smuggling, stalls, limits, origins, the token, undo -------------------------------------------

def _exchange(address, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` on one raw connection and read until the server closes it (or ``timeout`` s pass with
    nothing new: a server that keeps the connection open)."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


def _smuggled(host: str, token: str | None = None) -> bytes:
    """A complete, valid JSON rating request: stored (201) if the server ever parses it as a request."""
    body = json.dumps({"sample_id": 1, "rater": "smuggled", "score": 5}).encode()
    h = {"Host": host, "Content-Type": "application/json", "Content-Length": str(len(body))}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return _request("POST", "/api/ratings", h, body)


SMUGGLE_CASES = {  # name -> (status of the first request, how to build the first request around the second)
    "415 text/plain": (415, lambda host, inner: _request(
        "POST", "/api/ratings", {"Host": host, "Content-Type": "text/plain", "Content-Length": str(len(inner))},
        inner)),
    "403 foreign Host": (403, lambda host, inner: _request(
        "POST", "/api/ratings", {"Host": "evil.example", "Content-Type": "application/json",
                                 "Content-Length": str(len(inner))}, inner)),
    "411 no Content-Length": (411, lambda host, inner: _request(
        "POST", "/api/ratings", {"Host": host, "Content-Type": "application/json"}) + inner),
    "404 unknown path": (404, lambda host, inner: _request(
        "POST", "/api/nope", {"Host": host, "Content-Type": "application/json", "Content-Length": str(len(inner))},
        inner)),
    "200 GET with a body": (200, lambda host, inner: _request(
        "GET", "/api/stats", {"Host": host, "Content-Length": str(len(inner))}, inner)),
    "501 unsupported method": (501, lambda host, inner: _request(
        "PUT", "/api/ratings", {"Host": host, "Content-Type": "application/json", "Content-Length": str(len(inner))},
        inner)),
    "501 chunked": (501, lambda host, inner: _request(
        "POST", "/api/ratings", {"Host": host, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner))),
}


@pytest.mark.parametrize("case", list(SMUGGLE_CASES))
def test_pipelined_request_after_a_refused_one_is_not_run(server, store, case):
    # a body the server did not read must never be parsed as a second request on the kept-alive connection
    store.add_samples([{"prompt": "p", "completion": "c"}])
    status, build = SMUGGLE_CASES[case]
    host = f"127.0.0.1:{server.server_address[1]}"
    reply = _exchange(server.server_address[:2], build(host, _smuggled(host)))
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    assert store.ratings(include_retracted=True) == []
    assert reply.count(b"HTTP/1.1 ") == 1, reply  # one answer: the second request was never run
    assert b"Connection: close" in reply


def test_pipelined_request_after_401_is_not_run(store):
    srv = make_server(store, port=0, token="s3cret", quiet=True)
    srv.start_background()
    try:
        store.add_samples([{"prompt": "p", "completion": "c"}])
        host = f"127.0.0.1:{srv.server_address[1]}"
        inner = _smuggled(host, token="s3cret")  # even a request with the right token, hidden in a body
        first = _request("POST", "/api/ratings", {"Host": host, "Content-Type": "application/json",
                                                  "Content-Length": str(len(inner))}, inner)
        reply = _exchange(srv.server_address[:2], first)
        assert reply.startswith(b"HTTP/1.1 401 ")
        assert store.ratings(include_retracted=True) == []
        assert reply.count(b"HTTP/1.1 ") == 1, reply
    finally:
        srv.shutdown()
        srv.server_close()


def test_kept_alive_connection_still_serves_pipelined_good_requests(server, store):
    # the fix closes only after errors or unread bodies: two good pipelined requests are both answered
    store.add_samples([{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": "d"}])
    host = f"127.0.0.1:{server.server_address[1]}"
    two = _smuggled(host) + _request("GET", "/api/stats", {"Host": host, "Connection": "close"})
    reply = _exchange(server.server_address[:2], two)
    assert reply.startswith(b"HTTP/1.1 201 ") and reply.count(b"HTTP/1.1 200 ") == 1, reply
    assert [r.rater for r in store.ratings()] == ["smuggled"]


@pytest.fixture
def quick_server(store):
    srv = make_server(store, port=0, quiet=True, request_timeout=1.5)
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_stalled_and_trickling_clients_are_closed_while_others_are_served(quick_server, store):
    srv = quick_server
    ids = store.add_samples([{"prompt": "p", "completion": f"c{i}"} for i in range(20)])
    host = f"127.0.0.1:{srv.server_address[1]}"
    t0 = time.monotonic()
    stalled = socket.create_connection(srv.server_address[:2], timeout=10)  # Content-Length: 100, then 1 byte
    stalled.sendall(_request("POST", "/api/ratings", {"Host": host, "Content-Type": "application/json",
                                                      "Content-Length": "100"}, b"{"))
    trickle = socket.create_connection(srv.server_address[:2], timeout=10)  # headers, one byte every 0.1 s
    trickle.sendall(b"GET /api/stats HTTP/1.1\r\n")

    def drip() -> None:
        try:
            for b in f"Host: {host}\r\nX-Slow: {'x' * 200}\r\n\r\n".encode():
                trickle.sendall(bytes([b]))
                time.sleep(0.1)
        except OSError:
            pass  # the server closed it

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    for i in ids:  # other raters are served meanwhile
        status, got, _ = http(srv.url + "api/ratings", "POST", {"sample_id": i, "rater": "ann", "score": 3})
        assert status == 201, got
    served = time.monotonic() - t0

    def until_closed(s: socket.socket) -> tuple[bytes, float]:
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data, time.monotonic() - t0

    reply, stalled_after = until_closed(stalled)
    _, trickle_after = until_closed(trickle)
    stalled.close()
    trickle.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    # closed at the 1.5 s deadline (+ slack for a loaded machine), not after the 10 s client timeout
    assert 1.4 <= stalled_after <= 5 and 1.4 <= trickle_after <= 5, (stalled_after, trickle_after, served)
    assert len(store.ratings()) == 20 and {r.rater for r in store.ratings()} == {"ann"}


def test_idle_keep_alive_connection_is_closed(quick_server):
    with socket.create_connection(quick_server.server_address[:2], timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(1) == b""  # nothing sent: closed at the deadline
        assert 1.4 <= time.monotonic() - t0 <= 5


def test_connection_cap_answers_503_then_recovers(store):
    srv = make_server(store, port=0, quiet=True, max_connections=3)
    srv.start_background()
    idle = [socket.create_connection(srv.server_address[:2], timeout=10) for _ in range(3)]
    try:
        extra = _exchange(srv.server_address[:2], b"")  # the 4th connection: refused at once, no thread
        assert extra.startswith(b"HTTP/1.1 503 ") and b"3 connections" in extra, extra
        idle.pop().close()
        deadline = time.monotonic() + 5
        while (status := http(srv.url + "api/stats")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)  # the freed slot is released once its thread has finished
        assert status == 200
    finally:
        for s in idle:
            s.close()
        srv.shutdown()
        srv.server_close()


def test_request_line_and_header_size_limits(server):
    address, host = server.server_address[:2], f"127.0.0.1:{server.server_address[1]}"
    from textgym.human.server import MAX_HEAD

    reply = _exchange(address, _request("GET", "/api/stats?x=" + "a" * MAX_HEAD, {"Host": host}))
    assert reply.startswith(b"HTTP/1.1 414 ") and b"Connection: close" in reply, reply[:300]
    big = {"Host": host, **{f"X-Pad-{i}": "p" * 1000 for i in range(40)}}  # 40 KiB of headers, 100 B each line
    reply = _exchange(address, _request("GET", "/api/stats", big))
    assert reply.startswith(b"HTTP/1.1 431 ") and b"Connection: close" in reply, reply[:300]
    # the page's longest request, a skip list of 1000 six-digit ids, is well inside the limit
    skip = "%2C".join(str(100000 + i) for i in range(1000))
    assert http(server.url + "api/samples/next?rater=ann&skip=" + skip)[0] == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
    {"Origin": "null"},
    {"Referer": "http://evil.example/page.html"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
], ids=["foreign Origin", "other port", "null Origin", "foreign Referer", "cross-site", "same-site"])
def test_foreign_origin_refused(server, store, headers):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    store.add_rating(1, "bob", score=2)
    status, got, _ = http(server.url + "api/ratings", "POST", {"sample_id": 1, "rater": "ann", "score": 3},
                          headers=headers)
    assert status == 403 and "cross-site request refused" in got["error"], got
    assert http(server.url + "api/ratings/undo", "POST", {"rater": "bob"}, headers=headers)[0] == 403
    assert [(r.rater, r.retracted) for r in store.ratings(include_retracted=True)] == [("bob", None)]


def test_own_origin_accepted(server, store):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    own = server.url.rstrip("/")
    headers = {"Origin": own, "Referer": server.url, "Sec-Fetch-Site": "same-origin"}
    assert http(server.url + "api/ratings", "POST", {"sample_id": 1, "rater": "ann", "score": 3},
                headers=headers)[0] == 201


def test_token_never_printed_or_logged(tmp_path):
    secret = "tok-" + "9f3a1c77e2"
    env = dict(os.environ, TEXTGYM_TOKEN=secret, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "serve", str(tmp_path / "r.db"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", first).group(0)
        auth = {"Authorization": f"Bearer {secret}"}
        assert http(url)[0] == 200
        assert http(url + "api/stats", headers=auth)[0] == 200
        assert http(url + f"api/stats?token={secret}", headers=auth)[0] == 200  # a token pasted into a URL
        assert http(url + f"?token={secret}&x=1")[0] == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    log = first + out + err
    assert "GET /api/stats" in log and "token=[redacted]" in log, log  # the requests were logged ...
    assert secret not in log  # ... without the token
    assert "#token=TOKEN" in first  # and the rater is told how to pass it


def test_undo_retracts_the_raters_last_rating(server, store):
    a, b, c = store.add_samples([{"prompt": "p", "completion": "one"}, {"prompt": "p", "completion": "two"},
                                 {"prompt": "p", "completion": "three"}])
    for sid, score in ((a, 4), (b, 2)):
        assert http(server.url + "api/ratings", "POST", {"sample_id": sid, "rater": "ann", "score": score})[0] == 201
    assert http(server.url + "api/ratings", "POST", {"sample_id": c, "rater": "bob", "score": 1})[0] == 201
    status, got, _ = http(server.url + "api/ratings/undo", "POST", {"rater": "ann"})
    assert status == 200 and got["rating"]["sample_id"] == b and got["rating"]["retracted"] > 0
    assert got["sample"]["id"] == b and got["stats"]["ratings"] == 1 and "pair" not in got
    # kept in the store, marked retracted; ann's sample b is pending again; bob's rating untouched
    assert [(r.rater, r.sample_id, r.retracted is not None) for r in store.ratings(include_retracted=True)] == [
        ("ann", a, False), ("ann", b, True), ("bob", c, False)]
    assert [s.id for s in store.pending("ann")] == [b, c]
    assert http(server.url + "api/ratings", "POST", {"sample_id": b, "rater": "ann", "score": 5})[0] == 201
    assert http(server.url + "api/ratings/undo", "POST", {"rater": "ann"})[1]["rating"]["sample_id"] == b
    assert http(server.url + "api/ratings/undo", "POST", {"rater": "ann"})[1]["rating"]["sample_id"] == a
    status, got, _ = http(server.url + "api/ratings/undo", "POST", {"rater": "ann"})
    assert status == 200 and got["rating"] is None and got["stats"]["ratings"] == 0
    assert len(store.ratings(include_retracted=True)) == 4 and [r.rater for r in store.ratings()] == ["bob"]


def test_undo_a_preference_returns_the_pair(server, store):
    a, b = store.add_samples([{"prompt": "p", "completion": "x"}, {"prompt": "p", "completion": "y"}])
    body = {"sample_id": a, "other_id": b, "rater": "ann", "preferred": b}
    assert http(server.url + "api/ratings", "POST", body)[0] == 201
    got = http(server.url + "api/ratings/undo", "POST", {"rater": "ann"})[1]
    assert got["rating"]["kind"] == "preference" and [s["id"] for s in got["pair"]] == [a, b]
    assert http(server.url + "api/samples/next?rater=ann&mode=pair")[1]["pair"] is not None


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "'rater'"), ({"rater": ""}, 400, "'rater'"), ({"rater": 3}, 400, "'rater'"),
    ({"rater": "ann", "id": 1}, 400, "unknown fields"),
])
def test_undo_bad_input(server, store, body, status, message):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    store.add_rating(1, "ann", score=3)
    got_status, got, _ = http(server.url + "api/ratings/undo", "POST", body)
    assert got_status == status and message in got["error"], got
    assert http(server.url + "api/ratings/undo")[0] == 405
    assert [r.retracted for r in store.ratings(include_retracted=True)] == [None]


def test_cli_refuses_bad_limits(store, capsys):
    from agents.cli import main as cli_main

    assert cli_main(["serve", str(store.path), "--port", "0", "--request-timeout", "0"]) == 2
    assert "request_timeout must be a positive number" in capsys.readouterr().err
    assert cli_main(["serve", str(store.path), "--port", "0", "--max-connections", "0"]) == 2
    assert "max_connections must be a positive int" in capsys.readouterr().err
