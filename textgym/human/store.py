"""RatingStore: samples and the ratings people give them, in one SQLite file.

A *sample* is a prompt and a completion (with token ids and token texts when known, the run and model that
wrote it, and free-form ``meta``). A *rating* is given by a named *rater* and is exactly one of:

- ``score``: a scalar on the store's scale (``scale``, default 1..5);
- ``token_scores``: one number in [-1, 1] per completion token (bad / neutral / good by default);
- ``preferred``: a preference between two samples of the same prompt (``sample_id`` and ``other_id``);
  ``preferred`` is the id of the better one.

Ratings are never deleted: ``undo`` marks a rating *retracted* (it stays in the file and in exports).
A rater has at most one live rating of each kind per sample (per pair for preferences): a second one is a
:class:`DuplicateRating`, so two tabs or a retried request never count twice. A client may also pass a
``uid`` (e.g. a UUID made once per click): submitting the same ``uid`` again returns the first rating.

Storage: stdlib ``sqlite3`` in WAL mode (readers never block the writer), ``synchronous=FULL`` (a committed
rating survives a crash of the process or the machine), a busy timeout, one connection per thread, and every
write in one ``BEGIN IMMEDIATE`` transaction. The schema version is ``PRAGMA user_version``; opening an older
file migrates it in place, opening a newer one raises.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textgym.core import Sample

__all__ = ["RatingStore", "StoredSample", "Rating", "DuplicateRating", "RatingError", "SCHEMA_VERSION",
           "parse_scale"]

TOKEN_SCORE_RANGE = (-1.0, 1.0)

# Each entry migrates user_version i -> i + 1. Never edit a released entry: append a new one.
MIGRATIONS: list[str] = [
    # 0 -> 1: samples and scalar / per-token / pairwise ratings
    """
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        completion TEXT NOT NULL,
        prompt_ids TEXT NOT NULL DEFAULT '[]',      -- JSON list of ints
        completion_ids TEXT NOT NULL DEFAULT '[]',  -- JSON list of ints
        tokens TEXT NOT NULL DEFAULT '[]',          -- JSON list of str, one per completion token
        run_id TEXT,
        model_id TEXT,
        created REAL NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX samples_prompt ON samples(prompt);
    CREATE TABLE ratings (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER NOT NULL REFERENCES samples(id),
        rater TEXT NOT NULL,
        created REAL NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('score', 'tokens', 'preference')),
        score REAL,
        scale_min REAL,
        scale_max REAL,
        token_scores TEXT,
        other_id INTEGER REFERENCES samples(id),
        preferred INTEGER REFERENCES samples(id)
    );
    CREATE INDEX ratings_sample ON ratings(sample_id);
    CREATE INDEX ratings_rater ON ratings(rater);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 1 -> 2: undo keeps the rating (retracted), client uids make retries idempotent, one live rating per
    # (rater, sample, kind)
    """
    ALTER TABLE ratings ADD COLUMN retracted REAL;
    ALTER TABLE ratings ADD COLUMN uid TEXT;
    CREATE UNIQUE INDEX ratings_uid ON ratings(uid) WHERE uid IS NOT NULL;
    CREATE UNIQUE INDEX ratings_live ON ratings(rater, sample_id, kind, coalesce(other_id, 0))
        WHERE retracted IS NULL;
    CREATE INDEX ratings_other ON ratings(other_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class RatingError(ValueError):
    """A rating or sample that the store refuses; the message says why and what to send instead."""


class DuplicateRating(RatingError):
    """The rater already has a live rating of this kind for this sample (or pair)."""


@dataclass(frozen=True)
class StoredSample:
    """A sample as stored: its id plus everything of :class:`~textgym.core.Sample` worth keeping."""

    id: int
    prompt: str
    completion: str
    prompt_ids: tuple[int, ...] = ()
    completion_ids: tuple[int, ...] = ()
    tokens: tuple[str, ...] = ()
    run_id: str | None = None
    model_id: str | None = None
    created: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "completion": self.completion,
                "prompt_ids": list(self.prompt_ids), "completion_ids": list(self.completion_ids),
                "tokens": list(self.tokens), "run_id": self.run_id, "model_id": self.model_id,
                "created": self.created, "meta": dict(self.meta)}

    def to_sample(self) -> Sample:
        return Sample(prompt=self.prompt, completion=self.completion, prompt_ids=self.prompt_ids,
                      completion_ids=self.completion_ids, tokens=self.tokens, meta=dict(self.meta))


@dataclass(frozen=True)
class Rating:
    """One rating. ``kind`` is ``"score"``, ``"tokens"`` or ``"preference"``; the other fields follow it."""

    id: int
    sample_id: int
    rater: str
    created: float
    kind: str
    score: float | None = None
    scale: tuple[float, float] | None = None
    token_scores: tuple[float, ...] | None = None
    other_id: int | None = None
    preferred: int | None = None
    retracted: float | None = None
    uid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "sample_id": self.sample_id, "rater": self.rater,
                             "created": self.created, "kind": self.kind}
        if self.kind == "score":
            d.update(score=self.score, scale=list(self.scale) if self.scale else None)
        elif self.kind == "tokens":
            d["token_scores"] = list(self.token_scores or ())
        else:
            d.update(other_id=self.other_id, preferred=self.preferred)
        if self.retracted is not None:
            d["retracted"] = self.retracted
        if self.uid is not None:
            d["uid"] = self.uid
        return d


def parse_scale(text: str | Sequence[float]) -> tuple[float, float]:
    """``"1-5"`` or ``(1, 5)`` -> ``(1.0, 5.0)``; raises ValueError unless ``min < max``."""
    if isinstance(text, str):
        parts = text.replace(":", "-").replace("..", "-").split("-")
        # allow a negative lower end: "-2-2" splits as ["", "2", "2"]
        if len(parts) == 3 and parts[0] == "":
            parts = ["-" + parts[1], parts[2]]
        if len(parts) != 2:
            raise ValueError(f"a scale is MIN-MAX, e.g. 1-5 or 0-10, got {text!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"a scale is MIN-MAX with numbers, e.g. 1-5, got {text!r}") from None
    else:
        lo, hi = (float(x) for x in text)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"a scale needs finite MIN < MAX, got {lo}..{hi}")
    return lo, hi


def _ints(x: Any, what: str) -> list[int]:
    if x is None:
        return []
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise RatingError(f"{what} must be a list of ints, got {type(x).__name__}")
    out = []
    for v in x:
        if isinstance(v, bool) or not isinstance(v, int) and not (hasattr(v, "__index__")):
            raise RatingError(f"{what} must be a list of ints, got an element {v!r}")
        out.append(int(v))
    return out


def _strs(x: Any, what: str) -> list[str]:
    if x is None:
        return []
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise RatingError(f"{what} must be a list of strings, got {type(x).__name__}")
    out = list(x)
    if not all(isinstance(v, str) for v in out):
        raise RatingError(f"{what} must be a list of strings")
    return out


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise RatingError(f"{what} must be a number, got {x!r}")
    x = float(x)
    if not math.isfinite(x):
        raise RatingError(f"{what} must be finite, got {x}")
    return x


class RatingStore:
    """Samples and ratings in the SQLite file ``path`` (created if missing). Safe to share between threads
    and processes. ``scale``, when given, sets the scalar scale stored in the file (default 1..5)."""

    def __init__(self, path: str | Path, scale: str | Sequence[float] | None = None, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory; pass the path of a rating store file, e.g. ratings.db")
        self.timeout = float(timeout)
        self._local = threading.local()
        self._migrate()
        if scale is not None:
            self.set_scale(scale)

    # -- connections and transactions ----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            except sqlite3.OperationalError as e:
                raise ValueError(f"cannot open rating store {self.path}: {e}") from e
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous = FULL")  # a committed rating survives a power cut too
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``BEGIN IMMEDIATE`` takes the write lock up front (no upgrade deadlocks)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's store object is collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> RatingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(f"{self.path} has rating-store schema version {version}, newer than this textgym "
                                 f"understands ({SCHEMA_VERSION}); upgrade textgym to open it")
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {v + 1}")

    @property
    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # -- settings --------------------------------------------------------------------------------------------

    @property
    def scale(self) -> tuple[float, float]:
        """The (min, max) of scalar scores in this store; 1..5 unless set."""
        row = self._conn().execute("SELECT value FROM settings WHERE key = 'scale'").fetchone()
        return tuple(json.loads(row[0])) if row else (1.0, 5.0)  # type: ignore[return-value]

    def set_scale(self, scale: str | Sequence[float]) -> None:
        lo, hi = parse_scale(scale)
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('scale', ?)", (json.dumps([lo, hi]),))

    # -- samples ---------------------------------------------------------------------------------------------

    def add_samples(self, samples: Iterable[Sample | Mapping[str, Any]], run_id: str | None = None,
                    model_id: str | None = None) -> list[int]:
        """Store samples (``Sample`` objects or dicts with at least ``prompt`` and ``completion``), all in one
        transaction; returns their ids in order."""
        rows = [self._sample_row(s, run_id, model_id) for s in samples]
        with self._write() as conn:
            return [self._insert_sample(conn, r) for r in rows]

    def add_sample(self, sample: Sample | Mapping[str, Any], run_id: str | None = None,
                   model_id: str | None = None) -> int:
        return self.add_samples([sample], run_id=run_id, model_id=model_id)[0]

    @staticmethod
    def _sample_row(s: Sample | Mapping[str, Any], run_id: str | None, model_id: str | None) -> dict[str, Any]:
        d = {k: getattr(s, k) for k in ("prompt", "completion", "prompt_ids", "completion_ids", "tokens", "meta")} \
            if isinstance(s, Sample) else dict(s)
        for key in ("prompt", "completion"):
            if key not in d:
                raise RatingError(f"a sample needs {key!r} (a string); got keys {sorted(d)}")
            if not isinstance(d[key], str):
                raise RatingError(f"a sample's {key!r} must be a string, got {type(d[key]).__name__}")
        meta = d.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise RatingError(f"a sample's 'meta' must be an object, got {type(meta).__name__}")
        completion_ids = _ints(d.get("completion_ids"), "completion_ids")
        tokens = _strs(d.get("tokens"), "tokens")
        if tokens and completion_ids and len(tokens) != len(completion_ids):
            raise RatingError(f"a sample has {len(tokens)} tokens but {len(completion_ids)} completion_ids; "
                              "give one token text per completion id")
        created = d.get("created")
        for key in ("run_id", "model_id"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise RatingError(f"a sample's {key!r} must be a string or null")
        try:
            meta_json = json.dumps(dict(meta))
        except (TypeError, ValueError) as e:
            raise RatingError(f"a sample's 'meta' must be JSON-serializable: {e}") from None
        return {"prompt": d["prompt"], "completion": d["completion"],
                "prompt_ids": json.dumps(_ints(d.get("prompt_ids"), "prompt_ids")),
                "completion_ids": json.dumps(completion_ids), "tokens": json.dumps(tokens),
                "run_id": d.get("run_id", run_id), "model_id": d.get("model_id", model_id),
                "created": _number(created, "created") if created is not None else time.time(),
                "meta": meta_json}

    @staticmethod
    def _insert_sample(conn: sqlite3.Connection, row: dict[str, Any]) -> int:
        cur = conn.execute("INSERT INTO samples(prompt, completion, prompt_ids, completion_ids, tokens, run_id, "
                           "model_id, created, meta) VALUES (:prompt, :completion, :prompt_ids, :completion_ids, "
                           ":tokens, :run_id, :model_id, :created, :meta)", row)
        return int(cur.lastrowid)

    @staticmethod
    def _to_sample(row: sqlite3.Row) -> StoredSample:
        return StoredSample(id=row["id"], prompt=row["prompt"], completion=row["completion"],
                            prompt_ids=tuple(json.loads(row["prompt_ids"])),
                            completion_ids=tuple(json.loads(row["completion_ids"])),
                            tokens=tuple(json.loads(row["tokens"])), run_id=row["run_id"], model_id=row["model_id"],
                            created=row["created"], meta=json.loads(row["meta"]))

    def get_sample(self, sample_id: int) -> StoredSample:
        row = self._conn().execute("SELECT * FROM samples WHERE id = ?", (int(sample_id),)).fetchone()
        if row is None:
            raise KeyError(f"no sample with id {sample_id} in {self.path}")
        return self._to_sample(row)

    def samples(self, run_id: str | None = None) -> list[StoredSample]:
        q, args = "SELECT * FROM samples", ()
        if run_id is not None:
            q, args = q + " WHERE run_id = ?", (run_id,)
        return [self._to_sample(r) for r in self._conn().execute(q + " ORDER BY id", args)]

    _PENDING = ("NOT EXISTS (SELECT 1 FROM ratings r WHERE r.retracted IS NULL AND (r.sample_id = s.id OR "
                "r.other_id = s.id) {who})")

    def pending(self, rater: str | None = None, limit: int | None = None,
                exclude: Iterable[int] = ()) -> list[StoredSample]:
        """Samples with no live rating by ``rater`` (with ``rater=None``: no live rating at all), oldest
        first, leaving out the ids in ``exclude``."""
        who = "AND r.rater = ?" if rater is not None else ""
        args: list[Any] = [rater] if rater is not None else []
        q = f"SELECT * FROM samples s WHERE {self._PENDING.format(who=who)}"
        ex = [int(i) for i in exclude]
        if ex:
            q += f" AND s.id NOT IN ({','.join('?' * len(ex))})"
            args += ex
        q += " ORDER BY s.id"
        if limit is not None:
            q += " LIMIT ?"
            args.append(int(limit))
        return [self._to_sample(r) for r in self._conn().execute(q, args)]

    def next_pending(self, rater: str | None = None, exclude: Iterable[int] = ()) -> StoredSample | None:
        got = self.pending(rater, limit=1, exclude=exclude)
        return got[0] if got else None

    def next_pair(self, rater: str | None = None,
                  exclude: Iterable[int] = ()) -> tuple[StoredSample, StoredSample] | None:
        """Two samples of the same prompt that ``rater`` has not compared yet (oldest first), or None."""
        who = "AND r.rater = ?" if rater is not None else ""
        args: list[Any] = [rater] if rater is not None else []
        ex = [int(i) for i in exclude]
        marks = ",".join("?" * len(ex))
        not_ex = f"AND a.id NOT IN ({marks}) AND b.id NOT IN ({marks})" if ex else ""
        q = (f"SELECT a.id, b.id FROM samples a JOIN samples b ON a.prompt = b.prompt AND a.id < b.id "
             f"WHERE a.completion != b.completion {not_ex} AND NOT EXISTS (SELECT 1 FROM ratings r WHERE "
             f"r.retracted IS NULL AND r.kind = 'preference' AND ((r.sample_id = a.id AND r.other_id = b.id) OR "
             f"(r.sample_id = b.id AND r.other_id = a.id)) {who}) ORDER BY a.id, b.id LIMIT 1")
        row = self._conn().execute(q, ex + ex + args).fetchone()
        return (self.get_sample(row[0]), self.get_sample(row[1])) if row else None

    # -- ratings ---------------------------------------------------------------------------------------------

    def add_rating(self, sample_id: int, rater: str, *, score: float | None = None,
                   token_scores: Sequence[float] | None = None, preferred: int | None = None,
                   other_id: int | None = None, uid: str | None = None, created: float | None = None) -> Rating:
        """Store one rating and return it. Give exactly one of ``score`` (on :attr:`scale`), ``token_scores``
        (one value in [-1, 1] per completion token) or ``preferred`` (with ``other_id``: the id of the better
        of ``sample_id`` and ``other_id``, two samples of the same prompt). Raises :class:`RatingError` (and
        stores nothing) for anything else; :class:`DuplicateRating` if ``rater`` already rated it so."""
        with self._write() as conn:
            return self._add_rating(conn, sample_id, rater, score=score, token_scores=token_scores,
                                    preferred=preferred, other_id=other_id, uid=uid, created=created)

    def _add_rating(self, conn: sqlite3.Connection, sample_id: Any, rater: Any, *, score: Any = None,
                    token_scores: Any = None, preferred: Any = None, other_id: Any = None, uid: Any = None,
                    created: Any = None, retracted: Any = None) -> Rating:
        if not isinstance(rater, str) or not rater.strip() or len(rater) > 200:
            raise RatingError("rater must be a non-empty name (a string of at most 200 characters)")
        if isinstance(sample_id, bool) or not isinstance(sample_id, int):
            raise RatingError(f"sample_id must be an int, got {sample_id!r}")
        if uid is not None:
            if not isinstance(uid, str) or not uid or len(uid) > 200:
                raise RatingError("uid must be a non-empty string of at most 200 characters")
            row = conn.execute("SELECT * FROM ratings WHERE uid = ?", (uid,)).fetchone()
            if row is not None:  # a retried submission: the first one counts, once
                got = self._to_rating(row)
                if got.sample_id != sample_id or got.rater != rater:
                    raise RatingError(f"uid {uid!r} was already used for another rating")
                return got
        given = [k for k, v in (("score", score), ("token_scores", token_scores), ("preferred", preferred))
                 if v is not None]
        if len(given) != 1:
            raise RatingError("a rating needs exactly one of score, token_scores or preferred; got "
                              f"{given or 'none'}")
        row = conn.execute("SELECT completion_ids, tokens, prompt FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if row is None:
            raise RatingError(f"unknown sample id {sample_id}")
        values: dict[str, Any] = {"sample_id": sample_id, "rater": rater, "uid": uid, "retracted": retracted,
                                  "created": _number(created, "created") if created is not None else time.time(),
                                  "score": None, "scale_min": None, "scale_max": None, "token_scores": None,
                                  "other_id": None, "preferred": None}
        if score is not None:
            values.update(self._score_values(score))
        elif token_scores is not None:
            values.update(self._token_values(row, sample_id, token_scores))
        else:
            values.update(self._preference_values(conn, row, sample_id, other_id, preferred))
        try:
            cur = conn.execute("INSERT INTO ratings(sample_id, rater, created, kind, score, scale_min, scale_max, "
                               "token_scores, other_id, preferred, retracted, uid) VALUES (:sample_id, :rater, "
                               ":created, :kind, :score, :scale_min, :scale_max, :token_scores, :other_id, "
                               ":preferred, :retracted, :uid)", values)
        except sqlite3.IntegrityError as e:
            if "ratings.uid" in str(e) or "ratings_uid" in str(e):
                raise RatingError(f"uid {uid!r} was already used") from None
            raise DuplicateRating(f"rater {rater!r} already rated sample {sample_id} ({values['kind']}); undo that "
                                  "rating first to change it") from None
        return self._to_rating(conn.execute("SELECT * FROM ratings WHERE id = ?", (cur.lastrowid,)).fetchone())

    def _score_values(self, score: Any) -> dict[str, Any]:
        """The columns of a scalar rating, checked against the store's scale."""
        lo, hi = self.scale
        s = _number(score, "score")
        if not lo <= s <= hi:
            raise RatingError(f"score must be within the scale {lo:g}..{hi:g}, got {s:g}")
        return {"kind": "score", "score": s, "scale_min": lo, "scale_max": hi}

    @staticmethod
    def _token_values(row: sqlite3.Row, sample_id: int, token_scores: Any) -> dict[str, Any]:
        """The columns of a per-token rating: one score in :data:`TOKEN_SCORE_RANGE` per stored token."""
        n = max(len(json.loads(row["completion_ids"])), len(json.loads(row["tokens"])))
        if isinstance(token_scores, (str, bytes, Mapping)) or not isinstance(token_scores, Iterable):
            raise RatingError("token_scores must be a list of numbers, one per completion token")
        ts = [_number(v, "each token score") for v in token_scores]
        if n == 0:
            raise RatingError(f"sample {sample_id} has no tokens stored, so it cannot take per-token scores")
        if len(ts) != n:
            raise RatingError(f"token_scores has {len(ts)} values but sample {sample_id} has {n} tokens")
        lo, hi = TOKEN_SCORE_RANGE
        if not all(lo <= v <= hi for v in ts):
            raise RatingError(f"each token score must be within {lo:g}..{hi:g}")
        return {"kind": "tokens", "token_scores": json.dumps(ts)}

    @staticmethod
    def _preference_values(conn: sqlite3.Connection, row: sqlite3.Row, sample_id: int, other_id: Any,
                           preferred: Any) -> dict[str, Any]:
        """The columns of a preference between two completions of the same prompt, the pair in one order."""
        if isinstance(other_id, bool) or not isinstance(other_id, int):
            raise RatingError("a preference needs other_id (the id of the second sample) as an int")
        if isinstance(preferred, bool) or not isinstance(preferred, int) or preferred not in (sample_id, other_id):
            raise RatingError(f"preferred must be the id of one of the two samples ({sample_id} or {other_id}), "
                              f"got {preferred!r}")
        if other_id == sample_id:
            raise RatingError("a preference compares two different samples")
        other = conn.execute("SELECT prompt FROM samples WHERE id = ?", (other_id,)).fetchone()
        if other is None:
            raise RatingError(f"unknown sample id {other_id}")
        if other["prompt"] != row["prompt"]:
            raise RatingError(f"samples {sample_id} and {other_id} have different prompts; a preference compares "
                              "two completions of the same prompt")
        a, b = sorted((sample_id, other_id))  # one order per pair, so (a, b) and (b, a) are the same rating
        return {"kind": "preference", "sample_id": a, "other_id": b, "preferred": preferred}

    @staticmethod
    def _to_rating(row: sqlite3.Row) -> Rating:
        scale = (row["scale_min"], row["scale_max"]) if row["scale_min"] is not None else None
        ts = tuple(json.loads(row["token_scores"])) if row["token_scores"] is not None else None
        return Rating(id=row["id"], sample_id=row["sample_id"], rater=row["rater"], created=row["created"],
                      kind=row["kind"], score=row["score"], scale=scale, token_scores=ts, other_id=row["other_id"],
                      preferred=row["preferred"], retracted=row["retracted"], uid=row["uid"])

    def ratings(self, sample_id: int | None = None, rater: str | None = None, kind: str | None = None,
                include_retracted: bool = False) -> list[Rating]:
        """Ratings in the order given, filtered by sample (as ``sample_id`` or ``other_id``), rater and kind."""
        where, args = [], []
        if sample_id is not None:
            where.append("(sample_id = ? OR other_id = ?)")
            args += [int(sample_id), int(sample_id)]
        if rater is not None:
            where.append("rater = ?")
            args.append(rater)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if not include_retracted:
            where.append("retracted IS NULL")
        q = "SELECT * FROM ratings" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [self._to_rating(r) for r in self._conn().execute(q, args)]

    def undo(self, rater: str) -> Rating | None:
        """Retract ``rater``'s latest live rating (it stays in the file, marked retracted); returns it, or None."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM ratings WHERE rater = ? AND retracted IS NULL ORDER BY id DESC LIMIT 1",
                               (rater,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE ratings SET retracted = ? WHERE id = ?", (time.time(), row["id"]))
            return self._to_rating(row)

    def stats(self, rater: str | None = None) -> dict[str, Any]:
        """``{"samples", "pending", "ratings", "scale"}``: pending and ratings count only ``rater``'s when given."""
        conn = self._conn()
        n = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        who = "AND r.rater = ?" if rater is not None else ""
        args = (rater,) if rater is not None else ()
        q = f"SELECT count(*) FROM samples s WHERE {self._PENDING.format(who=who)}"
        pending = conn.execute(q, args).fetchone()[0]
        q = "SELECT count(*) FROM ratings WHERE retracted IS NULL" + (" AND rater = ?" if rater is not None else "")
        ratings = conn.execute(q, args).fetchone()[0]
        return {"samples": int(n), "pending": int(pending), "ratings": int(ratings), "scale": list(self.scale)}

    # -- JSONL -----------------------------------------------------------------------------------------------

    def export_jsonl(self, path: str | Path) -> int:
        """Write one JSON object per sample (its fields and a ``ratings`` list, retracted ones included) to
        ``path``; returns the number of samples written."""
        by_sample: dict[int, list[dict[str, Any]]] = {}
        for r in self.ratings(include_retracted=True):
            by_sample.setdefault(r.sample_id, []).append(r.to_dict())
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for s in self.samples():
                d = s.to_dict()
                d["ratings"] = by_sample.get(s.id, [])
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                n += 1
        return n

    def import_jsonl(self, path: str | Path, run_id: str | None = None) -> tuple[int, int]:
        """Read samples (one JSON object per line with at least ``prompt`` and ``completion``; optional
        ``id``, token fields, ``meta`` and a ``ratings`` list as :meth:`export_jsonl` writes) into the store.
        All or nothing: a bad line raises ValueError naming the file and line, and nothing is imported.
        Ids are new; a preference's ``other_id`` is mapped through the file's ``id`` fields. Returns
        ``(samples, ratings)`` imported."""
        lines: list[tuple[int, dict[str, Any]]] = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{path}:{lineno}: each line must be a JSON object with 'prompt' and "
                                     f"'completion', got {type(obj).__name__}")
                lines.append((lineno, obj))
        n_ratings = 0
        with self._write() as conn:
            id_map: dict[int, int] = {}
            for lineno, obj in lines:
                try:
                    row = self._sample_row({k: v for k, v in obj.items() if k not in ("id", "ratings")}, run_id, None)
                except RatingError as e:
                    raise ValueError(f"{path}:{lineno}: {e}") from None
                new_id = self._insert_sample(conn, row)
                if "id" in obj:
                    if isinstance(obj["id"], bool) or not isinstance(obj["id"], int) or obj["id"] in id_map:
                        raise ValueError(f"{path}:{lineno}: 'id' must be an int unique in the file, got {obj['id']!r}")
                    id_map[obj["id"]] = new_id
                obj["_new_id"] = new_id
            for lineno, obj in lines:
                ratings = obj.get("ratings") or []
                if not isinstance(ratings, list):
                    raise ValueError(f"{path}:{lineno}: 'ratings' must be a list")
                for r in ratings:
                    try:
                        self._import_rating(conn, obj["_new_id"], r, id_map)
                    except RatingError as e:
                        raise ValueError(f"{path}:{lineno}: rating {r!r}: {e}") from None
                    n_ratings += 1
        return len(lines), n_ratings

    def _import_rating(self, conn: sqlite3.Connection, sample_id: int, r: Any, id_map: dict[int, int]) -> None:
        if not isinstance(r, dict):
            raise RatingError("a rating must be an object")
        kw: dict[str, Any] = {}
        if r.get("other_id") is not None or r.get("preferred") is not None:
            if r.get("other_id") not in id_map or r.get("preferred") not in id_map:
                raise RatingError("a preference's other_id and preferred must be 'id's of samples in the same file")
            kw.update(other_id=id_map[r["other_id"]], preferred=id_map[r["preferred"]])
        if r.get("score") is not None:
            if r.get("scale") is not None and [float(x) for x in r["scale"]] != list(self.scale):
                raise RatingError(f"the rating's scale {r['scale']} differs from this store's {list(self.scale)}; "
                                  "open the store with that scale (e.g. --scale 1-10) before importing")
            kw["score"] = r["score"]
        if r.get("token_scores") is not None:
            kw["token_scores"] = r["token_scores"]
        self._add_rating(conn, sample_id, r.get("rater"), uid=r.get("uid"), created=r.get("created"),
                         retracted=r.get("retracted"), **kw)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])
