"""HumanScorer: a scorer whose scores are people's ratings, collected while the agent trains.

``score(samples)`` writes the samples to a :class:`~textgym.human.store.RatingStore` as pending and waits
(polling the file) until each has a live rating, then returns one reward per sample. Run ``textgym serve DB``
(or ``textgym rate DB``) on the same file and a person drives the PPO run from the web page or the terminal.

Ratings -> rewards happens in one place, :func:`rating_reward`: a scalar score maps linearly from its scale
to [-1, 1]; per-token scores (already in [-1, 1]) give their mean as the sequence reward and themselves as
per-token rewards; several ratings of one sample are averaged. Preferences are not turned into rewards here
(train a reward model on them with ``textgym train-rm``).

To collect a batch and then train (rather than blocking each env step): ``ids = scorer.submit(samples)``
whenever convenient, and later ``rewards = scorer.wait(ids)``; :func:`collect_ratings` does both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from textgym.core import Sample
from textgym.human.store import Rating, RatingStore

__all__ = ["HumanScorer", "HumanTimeout", "rating_reward", "collect_ratings", "ON_TIMEOUT"]

ON_TIMEOUT = ("error", "skip", "default")


class HumanTimeout(TimeoutError):
    """Not every sample was rated in time (with ``on_timeout="error"``)."""


def rating_reward(r: Rating) -> float | None:
    """The reward a rating stands for, in [-1, 1]: a scalar mapped from its scale, the mean of per-token
    scores; None for a preference (it ranks two samples, it does not score one)."""
    if r.kind == "score" and r.score is not None:
        lo, hi = r.scale or (0.0, 1.0)
        return 2.0 * (r.score - lo) / (hi - lo) - 1.0
    if r.kind == "tokens" and r.token_scores:
        return float(np.mean(r.token_scores))
    return None


class HumanScorer:
    """Scores samples by asking people: writes them to the store ``db`` and waits for their ratings.

    Args:
        db: a rating store path or object (share it with ``textgym serve DB``).
        rater: count only this rater's ratings (default: anyone's).
        timeout: seconds to wait for a batch; ``None`` waits forever.
        poll: seconds between looks at the store.
        on_timeout: ``"error"`` raises :class:`HumanTimeout` naming the unrated ids; ``"default"`` gives
            unrated samples ``default``; ``"skip"`` gives them NaN (so the env's checked call rejects them:
            use it only with :meth:`submit`/:meth:`wait` in your own loop, where you drop NaN rewards).
        default: the reward for unrated samples with ``on_timeout="default"``.
        run_id, model_id: recorded with every sample.
        on_wait: called as ``on_wait(rated, total)`` at each poll (a progress bar, a log line).
    """

    scores_partial = False  # people rate finished samples: refused by the env's reward_mode="token"

    def __init__(self, db: str | Path | RatingStore = "ratings.db", rater: str | None = None,
                 timeout: float | None = 600.0, poll: float = 0.5, on_timeout: str = "error", default: float = 0.0,
                 run_id: str | None = None, model_id: str | None = None,
                 on_wait: Callable[[int, int], None] | None = None, name: str = "human") -> None:
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {ON_TIMEOUT}, got {on_timeout!r}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
        if poll <= 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll}")
        self.store = db if isinstance(db, RatingStore) else RatingStore(db)
        self.rater, self.timeout, self.poll = rater, timeout, float(poll)
        self.on_timeout, self.default = on_timeout, float(default)
        self.run_id, self.model_id, self.on_wait, self.name = run_id, model_id, on_wait, name
        self.last_ids: list[int] = []

    def submit(self, samples: Sequence[Sample]) -> list[int]:
        """Write ``samples`` to the store as pending; returns their ids (for :meth:`wait`)."""
        return self.store.add_samples(samples, run_id=self.run_id, model_id=self.model_id)

    def _ratings(self, ids: Sequence[int]) -> dict[int, list[Rating]]:
        out: dict[int, list[Rating]] = {i: [] for i in ids}
        for i in ids:
            for r in self.store.ratings(sample_id=i, rater=self.rater):
                if r.sample_id == i and rating_reward(r) is not None:
                    out[i].append(r)
        return out

    def wait(self, ids: Sequence[int]) -> np.ndarray:
        """Wait until every id has a rating (or the timeout); returns the rewards, (len(ids),) float64."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            got = self._ratings(ids)
            rated = sum(bool(v) for v in got.values())
            if self.on_wait is not None:
                self.on_wait(rated, len(ids))
            if rated == len(ids) or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll if deadline is None else max(0.0, min(self.poll, deadline - time.monotonic())))
        missing = [i for i in ids if not got[i]]
        if missing and self.on_timeout == "error":
            raise HumanTimeout(f"{len(missing)} of {len(ids)} samples were not rated within {self.timeout:g} s "
                               f"(ids {missing[:10]}{' ...' if len(missing) > 10 else ''} in {self.store.path}); "
                               "rate them with `textgym serve` or `textgym rate`, raise timeout, or pass "
                               "on_timeout='default'")
        fill = self.default if self.on_timeout == "default" else float("nan")
        return np.array([np.mean([rating_reward(r) for r in got[i]]) if got[i] else fill for i in ids],
                        dtype=np.float64)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Submit ``samples`` and wait for their ratings: (B,) rewards in [-1, 1]."""
        self.last_ids = self.submit(samples)
        return self.wait(self.last_ids)

    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """Per-token rewards from per-token ratings; a sample rated only by a scalar pays it on its last token.
        Only finished samples can be rated, so use it with the env's ``reward_mode="sequence"`` bookkeeping or
        with your own loop; partial samples raise ValueError."""
        if any(not s.finished for s in samples):
            raise ValueError("HumanScorer cannot rate partial completions: people rate finished samples")
        scores = self.score(samples)
        out = []
        for s, i, sc in zip(samples, self.last_ids, scores):
            tok = [r for r in self.store.ratings(sample_id=i, rater=self.rater, kind="tokens")]
            n = len(s.completion_ids)
            if tok and len(tok[0].token_scores or ()) == n:
                out.append(np.mean([r.token_scores for r in tok], axis=0))
            else:
                r = np.zeros(n)
                if n:
                    r[-1] = sc
                out.append(r)
        return out


def collect_ratings(db: str | Path | RatingStore, samples: Sequence[Sample], **kwargs: object) -> np.ndarray:
    """Collect a batch, then train: write ``samples`` to ``db``, wait for their ratings, return the rewards.
    ``kwargs`` go to :class:`HumanScorer` (``rater``, ``timeout``, ``on_timeout``, ...)."""
    return HumanScorer(db, **kwargs).score(samples)  # type: ignore[arg-type]
