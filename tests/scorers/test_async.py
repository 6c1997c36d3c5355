"""Tests for textgym/scorers/async_.py: AsyncScorer (checked, non-blocking, still a Scorer) and ScoringPipeline
(pieces scored while the next ones are generated, scores back in the batch's order)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from textgym.core import Sample
from textgym.scorers import Scorer, ScorerError, score_batch
from textgym.scorers.async_ import AsyncScorer, ScoringPipeline
from textgym.scorers.rules import LengthScorer


def samples(texts):
    return [Sample(prompt="p", completion=t) for t in texts]


class LenScorer:
    """Score = number of characters of the completion (easy to check by hand)."""

    name = "len"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []

    def score(self, batch):
        time.sleep(self.delay)  # stands for a reward model or a remote service (releases the GIL)
        self.calls.append(len(batch))
        return np.array([len(s.completion) for s in batch], dtype=float)


class GatedScorer:
    """Blocks until ``gate`` is set: proves that submit/put return before scoring finishes."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def score(self, batch):
        if not self.gate.wait(timeout=10):
            raise TimeoutError("gate never opened")
        return np.ones(len(batch))


class Boom:
    name = "boom"

    def score(self, batch):
        raise RuntimeError("kaput")


class WrongShape:
    name = "wrong-shape"

    def score(self, batch):
        return np.zeros(len(batch) + 1)


def test_async_scorer_is_a_scorer_and_scores_like_the_wrapped_one():
    inner = LenScorer()
    with AsyncScorer(inner) as s:
        assert isinstance(s, Scorer)
        assert s.name == "len"
        batch = samples(["a", "abc", ""])
        np.testing.assert_array_equal(s.score(batch), [1.0, 3.0, 0.0])
        fut = s.submit(batch)
        np.testing.assert_array_equal(fut.result(timeout=10), score_batch(inner, batch)[0])
        # it passes the env's checked call too
        scores, parts = score_batch(s, batch)
        np.testing.assert_array_equal(scores, [1.0, 3.0, 0.0])
        assert list(parts) == ["len"]


def test_submit_returns_before_scoring_finishes():
    inner = GatedScorer()
    with AsyncScorer(inner) as s:
        fut = s.submit(samples(["x", "y"]))  # would block (and time out) if submit scored synchronously
        assert not fut.done()
        inner.gate.set()
        np.testing.assert_array_equal(fut.result(timeout=10), [1.0, 1.0])


@pytest.mark.parametrize("scorer, match", [(Boom(), r"scorer 'boom' raised RuntimeError: kaput"),
                                           (WrongShape(), r"scorer 'wrong-shape' returned shape \(3,\)")])
def test_errors_come_back_as_scorer_errors_naming_the_scorer(scorer, match):
    with AsyncScorer(scorer) as s:
        fut = s.submit(samples(["a", "b"]))
        with pytest.raises(ScorerError, match=match):
            fut.result(timeout=10)
        with pytest.raises(ScorerError, match=match):
            s.score(samples(["a", "b"]))


def test_bad_arguments_and_closed_scorer():
    with pytest.raises(ValueError, match="max_workers must be a positive int"):
        AsyncScorer(LenScorer(), max_workers=0)
    with pytest.raises(ValueError, match="executor must be 'thread' or 'process'"):
        AsyncScorer(LenScorer(), executor="gpu")
    with pytest.raises(TypeError, match="needs a Scorer"):
        AsyncScorer(object())
    s = AsyncScorer(LenScorer())
    s.close()
    s.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="is closed"):
        s.submit(samples(["a"]))


def test_submit_copies_the_batch():
    inner = GatedScorer()
    with AsyncScorer(inner) as s:
        batch = samples(["a", "b", "c"])
        fut = s.submit(batch)
        batch.clear()  # the caller reuses its list while the batch waits
        inner.gate.set()
        assert fut.result(timeout=10).shape == (3,)


def test_process_executor_scores_a_picklable_scorer():
    scorer = LengthScorer(target=2, unit="chars")
    batch = samples(["ab", "abcd", ""])
    with AsyncScorer(scorer, executor="process") as s:
        np.testing.assert_allclose(s.submit(batch).result(timeout=120), scorer.score(batch))


def test_pipeline_returns_scores_in_put_order():
    with ScoringPipeline(LenScorer(delay=0.01), max_workers=2) as pipe:
        pipe.put(samples(["a", "bb"]))
        pipe.put(samples(["ccc"]))
        pipe.put(samples(["dddd", "", "eeeee"]))
        np.testing.assert_array_equal(pipe.results(), [1, 2, 3, 4, 0, 5])
        # empty again: the next batch starts at row 0
        pipe.put(samples(["zz"]))
        np.testing.assert_array_equal(pipe.results(), [2])


def test_pipeline_rows_place_episodes_that_end_at_different_steps():
    # a vector env of 4 rows: rows 2 and 0 end at one step, rows 3 and 1 at later ones
    with ScoringPipeline(LenScorer()) as pipe:
        pipe.put(samples(["row2..", "r0"]), rows=[2, 0])
        pipe.put(samples(["row3!!!"]), rows=np.array([3]))
        pipe.put(samples(["r1_"]), rows=[1])
        np.testing.assert_array_equal(pipe.results(), [2, 3, 6, 7])


def test_pipeline_checks_rows():
    with ScoringPipeline(LenScorer()) as pipe:
        with pytest.raises(ValueError, match="2 samples but 1 rows"):
            pipe.put(samples(["a", "b"]), rows=[0])
        pipe.put(samples(["a"]), rows=[0])
        pipe.put(samples(["b"]), rows=[0])
        pipe.put(samples(["c"]), rows=[2])
        with pytest.raises(ValueError, match=r"put twice: \[0\], never: \[1\]"):
            pipe.results()


def test_pipeline_propagates_scorer_errors():
    with ScoringPipeline(Boom()) as pipe:
        pipe.put(samples(["a"]))
        with pytest.raises(ScorerError, match="scorer 'boom'"):
            pipe.results()


def test_pipeline_overlaps_scoring_with_generation():
    """K chunks, each generated in ``gen`` s and scored in ``score`` s (sleeps: the timing does not depend on
    the machine's load): overlapped, the wall time is about K * gen + score, not K * (gen + score)."""
    K, gen, score = 4, 0.08, 0.08
    scorer = LenScorer(delay=score)
    t0 = time.perf_counter()
    with ScoringPipeline(scorer) as pipe:
        for k in range(K):
            time.sleep(gen)  # generating chunk k
            pipe.put(samples(["x" * k]))
        out = pipe.results()
    wall = time.perf_counter() - t0
    np.testing.assert_array_equal(out, [0, 1, 2, 3])
    sequential = K * (gen + score)
    assert wall < sequential - 0.5 * (K - 1) * score, f"no overlap: {wall:.3f} s vs {sequential:.3f} s sequential"
    assert pipe.wait_s < 2 * score + 0.1  # only the last chunk's scoring is left to wait for


def test_shared_async_scorer_is_not_closed_by_the_pipeline():
    with AsyncScorer(LenScorer()) as s:
        with ScoringPipeline(s) as pipe:
            pipe.put(samples(["abc"]))
            np.testing.assert_array_equal(pipe.results(), [3])
        np.testing.assert_array_equal(s.score(samples(["ab"])), [2])  # still open


class ZeroScorer:
    """What the env scores with when the rollout scores through a pipeline: costs nothing, pays 0."""

    name = "zero"

    def score(self, batch):
        return np.zeros(len(batch))


def test_pipeline_scores_a_vector_env_rollout_like_the_env_does():
    """The rollout pattern: rows of a BatchedTextGenEnv that end at a step go to the pipeline at once (built by
    the env's own make_sample); the scores equal those the env pays when it scores synchronously."""
    from tests.envs.helpers import CountScorer, toy_kwargs
    from textgym.envs.vector import BatchedTextGenEnv

    N, seed = 6, 3
    sync_env = BatchedTextGenEnv(N, autoreset_mode="disabled", **toy_kwargs(scorer=CountScorer(), max_new_tokens=5))
    env = BatchedTextGenEnv(N, autoreset_mode="disabled", **toy_kwargs(scorer=ZeroScorer(), max_new_tokens=5))
    base = env
    eos = base.eos_token_id
    rng = np.random.default_rng(0)
    env.reset(seed=seed)
    sync_env.reset(seed=seed)
    expected = np.zeros(N)
    end_steps = set()
    with ScoringPipeline(CountScorer()) as pipe:
        for t in range(base.max_new_tokens):
            actions = rng.integers(0, 3, size=N)
            actions[rng.random(N) < 0.3] = eos  # some rows end early, at different steps
            before = env.done.copy()
            _, _, done, _, _ = env.step(actions)
            _, r_sync, _, _, _ = sync_env.step(actions)
            expected += r_sync
            rows = np.flatnonzero(done & ~before)  # the rows that ended at this step
            if rows.size:
                end_steps.add(t)
                ids, pl, ln = env.input_ids, env.prompt_lengths, env.lengths
                finished = [base.make_sample(env.prompts[i], ids[i, :pl[i]], ids[i, pl[i]:ln[i]]) for i in rows]
                pipe.put(finished, rows=rows)
            if env.done.all():
                break
        scores = pipe.results()
    assert len(end_steps) >= 2  # the test really has episodes ending at different steps
    np.testing.assert_allclose(scores, expected)
