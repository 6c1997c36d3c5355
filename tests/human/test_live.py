"""HumanScorer: samples become pending, rewards arrive when someone rates them (here: a thread or the web API)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.human.conftest import http
from textgym.core import Sample
from textgym.human.live import HumanScorer, HumanTimeout, collect_ratings, rating_reward
from textgym.scorers import Scorer, ScorerError, make_scorer, score_batch

SAMPLES = [Sample("p", "good", completion_ids=(1,), tokens=("good",)), Sample("p", "bad", completion_ids=(2,),
                                                                            tokens=("bad",))]


def _rate_when_pending(store, ratings: dict[str, dict], rater: str = "ann") -> threading.Thread:
    def rater_thread():
        deadline = time.monotonic() + 20
        done = set()
        while len(done) < len(ratings) and time.monotonic() < deadline:
            for s in store.pending(rater):
                if s.completion in ratings and s.id not in done:
                    store.add_rating(s.id, rater, **ratings[s.completion])
                    done.add(s.id)
            time.sleep(0.02)

    t = threading.Thread(target=rater_thread)
    t.start()
    return t


def test_scores_arrive_from_ratings(store):
    scorer = HumanScorer(store, poll=0.02, timeout=20)
    assert isinstance(scorer, Scorer)
    t = _rate_when_pending(store, {"good": {"score": 5}, "bad": {"token_scores": [-1]}})
    scores, _ = score_batch(scorer, SAMPLES)  # the env's checked call
    t.join()
    assert scores.tolist() == [1.0, -1.0]  # 5 on 1..5 -> 1; mean token score -1
    assert [s.run_id for s in store.samples()] == [None, None]


def test_web_rating_drives_the_scorer(server, store):
    scorer = HumanScorer(store, poll=0.02, timeout=20, run_id="ppo-1")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=scorer.score(SAMPLES[:1])))
    t.start()
    deadline = time.monotonic() + 20
    while (got := http(server.url + "api/samples/next?rater=web")[1]["sample"]) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert http(server.url + "api/ratings", "POST", {"sample_id": got["id"], "rater": "web", "score": 2})[0] == 201
    t.join(timeout=20)
    assert result["r"].tolist() == [-0.5]
    assert store.samples()[0].run_id == "ppo-1"


def test_timeout_modes(store):
    with pytest.raises(HumanTimeout, match="2 of 2 samples were not rated within 0.05 s"):
        HumanScorer(store, timeout=0.05, poll=0.01).score(SAMPLES)
    assert HumanScorer(store, timeout=0.0, on_timeout="default", default=0.25).score(SAMPLES).tolist() == [0.25] * 2
    assert np.isnan(HumanScorer(store, timeout=0.0, on_timeout="skip").score(SAMPLES)).all()
    with pytest.raises(ScorerError, match="human"):  # through the env's checked call, a timeout names the scorer
        score_batch(HumanScorer(store, timeout=0.0), SAMPLES)
    with pytest.raises(ValueError, match="on_timeout"):
        HumanScorer(store, on_timeout="wait")


def test_only_the_named_rater_counts(store):
    ids = HumanScorer(store, rater="ann").submit(SAMPLES)
    store.add_rating(ids[0], "bob", score=1)
    store.add_rating(ids[1], "ann", score=3)
    scorer = HumanScorer(store, rater="ann", timeout=0, on_timeout="default", default=9.0)
    assert scorer.wait(ids).tolist() == [9.0, 0.0]


def test_collect_then_train_and_registry(store, tmp_path):
    t = _rate_when_pending(store, {"good": {"score": 4}, "bad": {"score": 1}})
    rewards = collect_ratings(store, SAMPLES, timeout=20, poll=0.02)
    t.join()
    assert rewards.tolist() == [0.5, -1.0]
    assert isinstance(make_scorer({"name": "human", "db": str(tmp_path / "x.db")}), HumanScorer)
    assert all(rating_reward(r) is not None for r in store.ratings())
