"""Fixtures for the human-feedback tests: a fresh store, a scripted rater, a server on an ephemeral port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from textgym.human.store import RatingStore

POSITIVE = ["great", "lovely", "wonderful", "good", "happy", "excellent", "fun", "brilliant"]
NEGATIVE = ["awful", "bad", "boring", "terrible", "sad", "dull", "poor", "horrible"]
NEUTRAL = ["the", "film", "was", "plot", "and", "a", "story", "actors", "it", "very", "quite", "ending"]


def synthetic_samples(n_prompts: int, per_prompt: int, seed: int = 0) -> list[dict[str, Any]]:
    """Review completions mixing positive, negative and neutral words, with whitespace tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_prompts):
        for _ in range(per_prompt):
            words = list(rng.choice(NEUTRAL, size=5))
            for _ in range(int(rng.integers(0, 3))):
                words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(POSITIVE)))
            for _ in range(int(rng.integers(0, 3))):
                words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(NEGATIVE)))
            tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
            out.append({"prompt": f"Review {p}:", "completion": "".join(tokens), "tokens": tokens,
                        "completion_ids": list(range(len(tokens)))})
    return out


def scripted_score(completion: str) -> int:
    """The scripted rater: 3 + (positive words - negative words), clipped to the 1-5 scale."""
    words = completion.split()
    return int(np.clip(3 + sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words), 1, 5))


@pytest.fixture
def store(tmp_path) -> RatingStore:
    s = RatingStore(tmp_path / "ratings.db")
    yield s
    s.close()


@pytest.fixture
def server(store):
    from textgym.human.server import make_server

    srv = make_server(store, port=0, quiet=True)  # 127.0.0.1, an ephemeral port
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


def http(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    """One request: ``(status, decoded JSON or text, headers)``; 4xx/5xx are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, payload, hdrs = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, payload, hdrs = e.code, e.read(), dict(e.headers)
    text = payload.decode()
    try:
        return status, json.loads(text), hdrs
    except json.JSONDecodeError:
        return status, text, hdrs
