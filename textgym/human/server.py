"""``textgym serve DB``: the web rating page and its JSON API, on the stdlib ``http.server`` (no framework).

The page (``static/index.html`` + ``app.js`` + ``style.css``) rates pending samples three ways: a score on the
store's scale, per-token scores by clicking tokens (good / bad / neutral), and an A/B preference between two
completions of the same prompt. It shows a progress count and has keyboard shortcuts.

JSON API (the page uses it; so can any tool):

- ``GET /api/samples/next?rater=NAME&mode=score|tokens|pair[&skip=ID,ID]`` -> ``{"sample": {...}}`` (or
  ``{"pair": [a, b]}`` in pair mode; null when nothing is pending for that rater) with ``"stats"``. Tokens
  mode only offers samples whose token texts are stored.
- ``POST /api/ratings`` with a JSON body ``{"sample_id", "rater", and one of "score" | "token_scores" |
  "preferred" (+ "other_id")}``, optional ``"uid"`` (a retry with the same uid counts once) -> 201 and the
  rating.
- ``GET /api/stats[?rater=NAME]`` -> ``{"samples", "pending", "ratings", "scale"}``.

Bad input gets a 4xx JSON ``{"error": message}`` and changes nothing: malformed JSON or a wrong field (400),
a missing or wrong access token (401), an unknown sample (404), a second rating of the same sample by the
same rater (409), a body over :data:`MAX_BODY` bytes (413), a POST that is not ``application/json`` (415).

Security: binds 127.0.0.1 by default; any other address needs ``--token`` (or ``TEXTGYM_TOKEN``), which
every API request must carry (``Authorization: Bearer TOKEN``; the page reads it from ``?token=`` in its URL).
Without a token, requests must name a loopback ``Host`` (no DNS rebinding). Model text reaches the page only
as JSON and is put in the DOM with ``textContent``, never as HTML; every response sends a strict
``Content-Security-Policy`` and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from textgym.human.store import DuplicateRating, RatingError, RatingStore, StoredSample

__all__ = ["RatingServer", "make_server", "MAX_BODY"]

MAX_BODY = 64 * 1024  # bytes; a rating is well under 1 KiB, a per-token rating of 2k tokens ~20 KiB
HTML, JS, CSS = "text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8"
STATIC = {"/": ("index.html", HTML), "/index.html": ("index.html", HTML), "/app.js": ("app.js", JS),
          "/style.css": ("style.css", CSS)}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
RATING_KEYS = {"sample_id", "rater", "score", "token_scores", "preferred", "other_id", "uid"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _sample_json(s: StoredSample) -> dict[str, Any]:
    return {"id": s.id, "prompt": s.prompt, "completion": s.completion, "tokens": list(s.tokens),
            "run_id": s.run_id, "model_id": s.model_id}


class Handler(BaseHTTPRequestHandler):
    server: RatingServer
    protocol_version = "HTTP/1.1"
    server_version = "textgym"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        if not self.server.quiet:
            super().log_message(format, *args)

    # -- responses ------------------------------------------------------------------------------------------

    def _headers(self, status: int, ctype: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self._headers(status, "application/json", len(body))
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # -- checks ---------------------------------------------------------------------------------------------

    def _check_host(self) -> None:
        if self.server.token is None:  # loopback only: refuse other Host names (DNS rebinding)
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if not is_loopback(host):
                raise ApiError(403, "this server only answers requests addressed to 127.0.0.1 or localhost")

    def _check_token(self) -> None:
        token = self.server.token
        if token is None:
            return
        auth = self.headers.get("Authorization") or ""
        given = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if not given:
            raise ApiError(401, "this server needs an access token: send 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "wrong access token")

    def _body(self) -> dict[str, Any]:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "send the rating as JSON with 'Content-Type: application/json'")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a request body needs a Content-Length")
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length must be an integer") from None
        if n < 0:
            raise ApiError(400, "Content-Length must be non-negative")
        if n > MAX_BODY:
            self.close_connection = True  # do not read (or wait for) the oversized body
            raise ApiError(413, f"request body too large: {n} bytes, the limit is {MAX_BODY}")
        raw = self.rfile.read(n)
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "the body must be a JSON object")
        return obj

    # -- routes ---------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._check_host()
            if method == "GET" and url.path in STATIC:
                name, ctype = STATIC[url.path]
                body = resources.files("textgym.human").joinpath("static", name).read_bytes()
                self._headers(200, ctype, len(body))
                self.wfile.write(body)
                return
            if not url.path.startswith("/api/"):
                raise ApiError(404, f"no such page: {url.path}")
            self._check_token()
            if method == "GET" and url.path == "/api/samples/next":
                self._json(200, self._next(query))
            elif method == "GET" and url.path == "/api/stats":
                self._json(200, self.server.store.stats(query.get("rater") or None))
            elif method == "POST" and url.path == "/api/ratings":
                self._json(201, self._rate(self._body()))
            elif url.path in ("/api/samples/next", "/api/stats", "/api/ratings"):
                raise ApiError(405, f"{method} is not allowed on {url.path}")
            else:
                raise ApiError(404, f"no such API endpoint: {url.path}")
        except ApiError as e:
            self._error(e.status, str(e))
        except Exception as e:  # a bug, not bad input: say so, keep serving
            self._error(500, f"internal error: {type(e).__name__}: {e}")

    def _next(self, query: dict[str, str]) -> dict[str, Any]:
        store = self.server.store
        rater = query.get("rater") or None
        mode = query.get("mode", "score")
        try:  # samples the page skipped this session
            skip = [int(x) for x in query.get("skip", "").split(",") if x.strip()][:1000]
        except ValueError:
            raise ApiError(400, "skip must be a comma-separated list of sample ids") from None
        out: dict[str, Any] = {"stats": store.stats(rater)}
        if mode == "pair":
            pair = store.next_pair(rater, exclude=skip)
            out["pair"] = [_sample_json(s) for s in pair] if pair else None
        elif mode in ("score", "tokens"):
            s = store.next_pending(rater, exclude=skip)
            if mode == "tokens" and s is not None and not s.tokens:
                s = next((x for x in store.pending(rater, exclude=skip) if x.tokens), None)
            out["sample"] = _sample_json(s) if s else None
        else:
            raise ApiError(400, f"mode must be score, tokens or pair, got {mode!r}")
        return out

    def _rate(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - RATING_KEYS
        if unknown:
            raise ApiError(400, f"unknown fields {sorted(unknown)}; a rating has {sorted(RATING_KEYS)}")
        for key in ("sample_id", "rater"):
            if key not in body:
                raise ApiError(400, f"a rating needs {key!r}")
        sample_id = body["sample_id"]
        if isinstance(sample_id, bool) or not isinstance(sample_id, int):
            raise ApiError(400, f"sample_id must be an integer, got {sample_id!r}")
        store = self.server.store
        for sid in (sample_id, body.get("other_id")):
            if isinstance(sid, int) and not isinstance(sid, bool):
                try:
                    store.get_sample(sid)
                except KeyError:
                    raise ApiError(404, f"unknown sample id {sid}") from None
        try:
            r = store.add_rating(sample_id, body["rater"], score=body.get("score"),
                                 token_scores=body.get("token_scores"), preferred=body.get("preferred"),
                                 other_id=body.get("other_id"), uid=body.get("uid"))
        except DuplicateRating as e:
            raise ApiError(409, str(e)) from None
        except RatingError as e:
            raise ApiError(400, str(e)) from None
        return {"rating": r.to_dict(), "stats": store.stats(body["rater"])}


class RatingServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` over one :class:`RatingStore`. ``token=None`` is allowed only on loopback."""

    daemon_threads = True

    def __init__(self, store: RatingStore, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 quiet: bool = False) -> None:
        if token is not None and not token:
            token = None
        if not is_loopback(host) and token is None:
            raise ValueError(f"refusing to serve on {host} without an access token: anyone who can reach it could "
                             "read the samples and write ratings. Pass --token SECRET (or set TEXTGYM_TOKEN), or "
                             "bind 127.0.0.1")
        self.store = store
        self.token = token
        self.quiet = quiet
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (for tests and notebooks); stop with ``shutdown()`` then ``server_close()``."""
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        t.start()
        return t


def make_server(db: str | RatingStore, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                quiet: bool = False) -> RatingServer:
    """A :class:`RatingServer` on ``db`` (a path or a store); ``port=0`` picks a free port."""
    store = db if isinstance(db, RatingStore) else RatingStore(db)
    return RatingServer(store, host=host, port=port, token=token, quiet=quiet)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", help="rating store file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs --token")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--token", default=os.environ.get("TEXTGYM_TOKEN"),
                        help="access token the page and API calls must carry (default: $TEXTGYM_TOKEN)")
    parser.add_argument("--scale", default=None, help="scalar scale MIN-MAX, e.g. 1-5 (sets the store's scale)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")


def main(args: argparse.Namespace) -> int:
    try:
        store = RatingStore(args.db, scale=args.scale)
        server = make_server(store, host=args.host, port=args.port, token=args.token, quiet=args.quiet)
    except (ValueError, OSError) as e:
        print(f"textgym serve: {e}", file=sys.stderr)
        return 2
    url = server.url + (f"?token={server.token}" if server.token else "")
    st = store.stats()
    print(f"rating page: {url}  ({st['samples']} samples, {st['pending']} pending). Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
