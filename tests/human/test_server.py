"""The web rater's JSON API over real HTTP on 127.0.0.1 (ephemeral port): flows, bad input, tokens, headers."""

from __future__ import annotations

import json
import socket

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
