"""``textgym serve DB``: the web rating page and its JSON API, on the stdlib ``http.server`` (no framework).

The page (``static/index.html`` + ``app.js`` + ``style.css``) rates pending samples three ways: a score on the
store's scale, per-token scores by clicking tokens (good / bad / neutral), and an A/B preference between two
completions of the same prompt. It shows a progress count, has keyboard shortcuts and undoes the rater's last
rating.

JSON API (the page uses it; so can any tool):

- ``GET /api/samples/next?rater=NAME&mode=score|tokens|pair[&skip=ID,ID]`` -> ``{"sample": {...}}`` (or
  ``{"pair": [a, b]}`` in pair mode; null when nothing is pending for that rater) with ``"stats"``. Tokens
  mode only offers samples whose token texts are stored.
- ``POST /api/ratings`` with a JSON body ``{"sample_id", "rater", and one of "score" | "token_scores" |
  "preferred" (+ "other_id")}``, optional ``"uid"`` (a retry with the same uid counts once) -> 201 and the
  rating.
- ``POST /api/ratings/undo`` with ``{"rater"}`` -> 200 and ``{"rating", "sample" (+ "pair" for a preference),
  "stats"}``: the rater's latest live rating, now retracted (:meth:`RatingStore.undo`: it stays in the store,
  marked retracted, and its sample is pending again), or ``"rating": null`` when there is nothing to undo.
- ``GET /api/stats[?rater=NAME]`` -> ``{"samples", "pending", "ratings", "scale"}``.

Bad input gets a 4xx JSON ``{"error": message}`` and changes nothing: malformed JSON or a wrong field (400),
a missing or wrong access token (401), a foreign ``Host``, ``Origin`` or ``Referer`` (403), an unknown sample
(404), a second rating of the same sample by the same rater (409), a body that does not arrive in time (408),
no ``Content-Length`` (411), a body over :data:`MAX_BODY` bytes (413), a request line or headers over
:data:`MAX_HEAD` bytes (414 / 431), a POST that is not ``application/json`` (415), a chunked body (501).

Security: binds 127.0.0.1 by default; any other address needs ``--token`` (or ``TEXTGYM_TOKEN``), which
every API request must carry (``Authorization: Bearer TOKEN``). The page reads the token from its URL's
fragment (``/#token=TOKEN``), which browsers never send to the server, keeps it in the tab's
``sessionStorage`` and removes it from the address bar and history. The token is never printed or logged
(request logs redact any ``token=`` in a URL). Without a token, requests must name a loopback ``Host`` (no DNS
rebinding). A POST whose ``Origin`` (or, without one, ``Referer``) is not this server's own origin, or that a
browser marks ``Sec-Fetch-Site: cross-site``/``same-site``, is refused, so another web page the rater visits
cannot write ratings. Model text reaches the page only as JSON and is put in the DOM with ``textContent``,
never as HTML; every response sends a strict ``Content-Security-Policy`` and ``X-Content-Type-Options: nosniff``.

Connections: a connection stays open for the next request only after a successful response to a request whose
body was read to its end; every error closes it, so an unread body is never parsed as a request. A request
(line, headers and body) must arrive within ``request_timeout`` seconds (default 30) of the connection opening
or of the previous response, or the connection is closed: a stalled or trickling client holds a thread for at
most that long. At most ``max_connections`` (default 64) connections are served at once; the next one gets 503.

Why the stdlib and not Starlette on uvicorn: uvicorn frames bodies and limits header size and concurrency, but
has no deadline for a request to arrive (its keep-alive timer restarts on every byte, and ASGI code only runs
once the headers are complete; uvicorn issue #157 lists the request timeouts as not done, and PR #1685, which
added one, was closed unmerged), so the stalled-client limit would still need a subclass of its internal
protocol classes, on top of two new dependencies. Here the three limits are ~60 lines on top of
``http.server``, covered by tests on raw sockets, and ``textgym serve`` starts in what ``import textgym`` takes.
"""

from __future__ import annotations

import argparse
import hmac
import io
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from textgym.human.store import DuplicateRating, RatingError, RatingStore, StoredSample

__all__ = ["RatingServer", "make_server", "MAX_BODY", "MAX_HEAD", "REQUEST_TIMEOUT", "MAX_CONNECTIONS"]

MAX_BODY = 64 * 1024  # bytes; a rating is well under 1 KiB, a per-token rating of 2k tokens ~20 KiB
MAX_HEAD = 32 * 1024  # bytes of request line + headers (the page's longest, a skip list of 1000 ids, is ~10 KiB)
REQUEST_TIMEOUT = 30.0  # seconds for a whole request to arrive
MAX_CONNECTIONS = 64  # connections served at once (one thread each)
HTML, JS, CSS = "text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8"
STATIC = {"/": ("index.html", HTML), "/index.html": ("index.html", HTML), "/app.js": ("app.js", JS),
          "/style.css": ("style.css", CSS)}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
RATING_KEYS = {"sample_id", "rater", "score", "token_scores", "preferred", "other_id", "uid"}
UNDO_KEYS = {"rater"}
_TOKEN_IN_URL = re.compile(r"(token=)[^&#\s\"]*", re.IGNORECASE)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _HeadTooLarge(Exception):
    def __init__(self, in_request_line: bool) -> None:
        super().__init__("request line too long" if in_request_line else "request headers too large")
        self.in_request_line = in_request_line


class _ClientGone(Exception):
    """The client closed the connection mid-body: nothing to answer."""


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


class _DeadlineSocket(io.RawIOBase):
    """Reads from the connection that raise ``TimeoutError`` once the handler's deadline has passed, however
    the bytes trickle in (a per-``recv`` timeout alone lets a client send one byte every 29 s forever)."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self._sock, self._handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request did not arrive within {self._handler.timeout:g} s")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(b)
        finally:
            self._sock.settimeout(self._handler.timeout)  # writes get the full timeout


class _Reader:
    """The connection's buffered reader, with a byte budget for the request head (request line + headers)."""

    def __init__(self, raw: io.RawIOBase) -> None:
        self._buf = io.BufferedReader(raw)
        self._head_left: int | None = None
        self._lines = 0

    def start_head(self) -> None:
        self._head_left, self._lines = MAX_HEAD, 0

    def end_head(self) -> None:
        self._head_left = None

    def readline(self, limit: int = -1) -> bytes:
        if self._head_left is None:
            return self._buf.readline(limit)
        cap = self._head_left + 1 if limit is None or limit < 0 else min(limit, self._head_left + 1)
        try:
            line = self._buf.readline(cap)
        except TimeoutError:
            if self._lines == 0:  # no request line in time (e.g. an idle keep-alive connection): close quietly
                return b""
            raise  # headers cut off mid-way: the stdlib logs "Request timed out" and closes
        self._head_left -= len(line)
        if self._head_left < 0:
            raise _HeadTooLarge(self._lines == 0)
        self._lines += 1
        return line

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)

    def close(self) -> None:
        self._buf.close()


class Handler(BaseHTTPRequestHandler):
    server: RatingServer
    protocol_version = "HTTP/1.1"
    server_version = "textgym"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # StreamRequestHandler sets it on the socket
        super().setup()
        self.deadline = time.monotonic() + self.timeout
        plain, self.rfile = self.rfile, _Reader(_DeadlineSocket(self.connection, self))  # type: ignore[assignment]
        plain.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        if not self.server.quiet:
            sys.stderr.write(_TOKEN_IN_URL.sub(r"\1[redacted]", f"{self.address_string()} - - "
                                               f"[{self.log_date_time_string()}] {format % args}") + "\n")

    def handle_one_request(self) -> None:
        self.rfile.start_head()
        self._body_left = 0  # bytes of this request's body not read yet (-1: framing we do not accept)
        try:
            super().handle_one_request()
        except _HeadTooLarge as e:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            status = 414 if e.in_request_line else 431
            self._error(status, f"{e}: the limit for the request line and headers is {MAX_HEAD} bytes")
        except _ClientGone:
            self.close_connection = True
        # the next request on this connection must arrive in time too (an idle keep-alive connection closes)
        self.deadline = time.monotonic() + self.timeout

    # -- responses ------------------------------------------------------------------------------------------

    def _headers(self, status: int, ctype: str, length: int) -> None:
        # Keep the connection only after a success whose request body was read to its end; after anything
        # else an unread body could be parsed as the next request (request smuggling).
        if status >= 400 or self._body_left != 0:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")  # our own POSTs keep their Origin header
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self._headers(status, "application/json", len(body))
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (a malformed request line, an unknown method) as JSON; they close too."""
        self.log_error("code %d, message %s", code, message)
        self._error(int(code), message or HTTPStatus(code).phrase)

    # -- checks ---------------------------------------------------------------------------------------------

    def _framing(self) -> None:
        """How long the body is; a body we cannot delimit is refused (and the connection closed)."""
        if self.headers.get("Transfer-Encoding") is not None:
            self._body_left = -1
            raise ApiError(501, "chunked (Transfer-Encoding) request bodies are not supported; send a "
                                "Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,18}", lengths[0].strip()):
            self._body_left = -1
            raise ApiError(400, f"Content-Length must be one non-negative integer, got {lengths}")
        self._body_left = int(lengths[0])

    def _check_host(self) -> None:
        if self.server.token is None:  # loopback only: refuse other Host names (DNS rebinding)
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if not is_loopback(host):
                raise ApiError(403, "this server only answers requests addressed to 127.0.0.1 or localhost")

    def _check_origin(self) -> None:
        """A state-changing request must come from this server's own page (or from a non-browser client,
        which sends neither Origin nor Referer); browsers send Origin with every POST."""
        host = (self.headers.get("Host") or "").strip().lower()
        site = (self.headers.get("Sec-Fetch-Site") or "same-origin").strip().lower()
        if site not in ("same-origin", "none"):
            raise ApiError(403, f"cross-site request refused (Sec-Fetch-Site: {site}): rate from this "
                                f"server's own page, http://{host}/")
        for name in ("Origin", "Referer"):
            source = self.headers.get(name)
            if source is None:
                continue
            parts = urlsplit(source.strip())
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host or not host:
                raise ApiError(403, f"cross-site request refused: {name} {source!r} is not this server's origin "
                                    f"(http://{host})")
            return  # Origin decides when present; Referer only without it

    def _check_token(self) -> None:
        token = self.server.token
        if token is None:
            return
        auth = self.headers.get("Authorization") or ""
        given = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if not given:
            raise ApiError(401, "this server needs an access token: open the page as http://HOST:PORT/#token=TOKEN, "
                                "or send 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "wrong access token")

    def _body(self) -> dict[str, Any]:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "send the rating as JSON with 'Content-Type: application/json'")
        if self.headers.get("Content-Length") is None:
            raise ApiError(411, "a request body needs a Content-Length")
        n = self._body_left
        if n > MAX_BODY:
            raise ApiError(413, f"request body too large: {n} bytes, the limit is {MAX_BODY}")
        try:
            raw = self.rfile.read(n)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.timeout:g} s") from None
        except OSError:
            raise _ClientGone from None
        if len(raw) < n:
            raise _ClientGone
        self._body_left = 0
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
        self.rfile.end_head()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._framing()
            self._check_host()
            if method != "GET":
                self._check_origin()
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
            elif method == "POST" and url.path == "/api/ratings/undo":
                self._json(200, self._undo(self._body()))
            elif url.path in ("/api/samples/next", "/api/stats", "/api/ratings", "/api/ratings/undo"):
                raise ApiError(405, f"{method} is not allowed on {url.path}")
            else:
                raise ApiError(404, f"no such API endpoint: {url.path}")
        except ApiError as e:
            self._error(e.status, str(e))
        except _ClientGone:
            raise
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

    def _undo(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - UNDO_KEYS
        if unknown:
            raise ApiError(400, f"unknown fields {sorted(unknown)}; an undo has {sorted(UNDO_KEYS)}")
        rater = body.get("rater")
        if not isinstance(rater, str) or not rater.strip():
            raise ApiError(400, "an undo needs 'rater': the name whose latest rating to retract")
        store = self.server.store
        r = store.undo(rater)
        out: dict[str, Any] = {"rating": None}
        if r is not None:  # kept in the store, marked retracted; its sample is pending again for this rater
            r = next(x for x in store.ratings(sample_id=r.sample_id, rater=rater, include_retracted=True)
                     if x.id == r.id)
            out["rating"] = r.to_dict()
            out["sample"] = _sample_json(store.get_sample(r.sample_id))
            if r.other_id is not None:
                out["pair"] = [out["sample"], _sample_json(store.get_sample(r.other_id))]
        out["stats"] = store.stats(rater)
        return out


class RatingServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` over one :class:`RatingStore`. ``token=None`` is allowed only on loopback.
    ``request_timeout`` (seconds) bounds how long a request may take to arrive; ``max_connections`` how many
    connections are served at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, store: RatingStore, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 quiet: bool = False, request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        if token is not None and not token:
            token = None
        if not is_loopback(host) and token is None:
            raise ValueError(f"refusing to serve on {host} without an access token: anyone who can reach it could "
                             "read the samples and write ratings. Pass --token SECRET (or set TEXTGYM_TOKEN), or "
                             "bind 127.0.0.1")
        if isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float)) \
                or not request_timeout > 0:
            raise ValueError(f"request_timeout must be a positive number of seconds, got {request_timeout!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive int, got {max_connections!r}")
        self.store = store
        self.token = token
        self.quiet = quiet
        self.request_timeout = float(request_timeout)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # full: say so at once, never queue a thread
            body = json.dumps({"error": f"busy: {self.max_connections} connections are open; retry"}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(body), body))
            except OSError:
                pass
            self.close_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Close after a lingering read: the client gets our last response before the close, rather than a
        reset for the bytes it sent that we did not read (a refused body). Bounded in bytes and time."""
        try:
            request.shutdown(socket.SHUT_WR)
            end, drained = time.monotonic() + 2.0, 0
            while drained <= MAX_BODY + MAX_HEAD and (left := end - time.monotonic()) > 0:
                request.settimeout(left)
                chunk = request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a client that went away is no error of ours
            return
        super().handle_error(request, client_address)

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (for tests and notebooks); stop with ``shutdown()`` then ``server_close()``."""
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        t.start()
        return t


def make_server(db: str | RatingStore, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                quiet: bool = False, request_timeout: float = REQUEST_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS) -> RatingServer:
    """A :class:`RatingServer` on ``db`` (a path or a store); ``port=0`` picks a free port."""
    store = db if isinstance(db, RatingStore) else RatingStore(db)
    return RatingServer(store, host=host, port=port, token=token, quiet=quiet, request_timeout=request_timeout,
                        max_connections=max_connections)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", help="rating store file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs --token")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--token", default=os.environ.get("TEXTGYM_TOKEN"),
                        help="access token the page and API calls must carry (default: $TEXTGYM_TOKEN, which "
                             "keeps it out of the process list); open the page as http://HOST:PORT/#token=TOKEN")
    parser.add_argument("--scale", default=None, help="scalar scale MIN-MAX, e.g. 1-5 (sets the store's scale)")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                        help="seconds a request may take to arrive before its connection is closed")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help="connections served at once; more get 503")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")


def main(args: argparse.Namespace) -> int:
    try:
        store = RatingStore(args.db, scale=args.scale)
        server = make_server(store, host=args.host, port=args.port, token=args.token, quiet=args.quiet,
                             request_timeout=args.request_timeout, max_connections=args.max_connections)
    except (ValueError, OSError) as e:
        print(f"textgym serve: {e}", file=sys.stderr)
        return 2
    st = store.stats()
    # the token is never printed: the rater was given it (or set it) and adds it to the URL's fragment
    how = f" (open it as {server.url}#token=TOKEN, with the --token / TEXTGYM_TOKEN value)" if server.token else ""
    print(f"rating page: {server.url}{how}  ({st['samples']} samples, {st['pending']} pending). Ctrl-C to stop.",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
