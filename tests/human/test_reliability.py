"""Reliability: concurrent raters lose nothing and count nothing twice; a writer killed with SIGKILL leaves a
consistent store with every committed rating in it."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

from tests.human.conftest import http
from textgym.human.store import RatingStore

N_RATERS = 8
N_SAMPLES = 125  # 8 raters x 125 samples = 1000 ratings


def _score(rater: int, sample_id: int) -> int:
    return 1 + (rater * 7 + sample_id) % 5


def _process_rater(db: str, rater: int, ids: list[int]) -> None:
    """A rater in its own process, writing straight to the store (and retrying every 3rd rating)."""
    store = RatingStore(db)
    for i in ids:
        for _ in range(2 if i % 3 == 0 else 1):
            store.add_rating(i, f"rater{rater}", score=_score(rater, i), uid=f"r{rater}-s{i}")
    store.close()


def test_eight_concurrent_raters_1000_ratings(server, store):
    ids = store.add_samples([{"prompt": f"p{i % 10}", "completion": f"c{i}"} for i in range(N_SAMPLES)])
    errors: list[str] = []

    def http_rater(rater: int) -> None:  # raters 0-3: threads through the web API, each rating retried once
        for i in ids:
            body = {"sample_id": i, "rater": f"rater{rater}", "score": _score(rater, i), "uid": f"r{rater}-s{i}"}
            for _ in range(2 if i % 2 == 0 else 1):
                status, got, _ = http(server.url + "api/ratings", "POST", body)
                if status != 201:
                    errors.append(f"{status} {got}")

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_process_rater, args=(str(store.path), r, ids)) for r in range(4, 8)]
    threads = [threading.Thread(target=http_rater, args=(r,)) for r in range(4)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    for p in procs:
        p.join(timeout=240)
    elapsed = time.perf_counter() - t0
    assert errors == []
    assert [p.exitcode for p in procs] == [0] * 4
    ratings = store.ratings(include_retracted=True)
    assert len(ratings) == N_RATERS * N_SAMPLES == 1000
    got = {(r.rater, r.sample_id): r.score for r in ratings}
    assert len(got) == 1000  # no (rater, sample) twice
    assert got == {(f"rater{r}", i): _score(r, i) for r in range(N_RATERS) for i in ids}  # none lost or changed
    assert store.stats()["ratings"] == 1000 and store.integrity_check() == "ok"
    print(f"1000 ratings from 8 concurrent raters (+ retries) in {elapsed:.1f} s")


WRITER = r"""
import sys
from textgym.human.store import RatingStore
store = RatingStore(sys.argv[1])
k = 0
while True:
    ids = store.add_samples([{"prompt": "p", "completion": "x" * 2000, "meta": {"k": k}}] * 20)  # a big transaction
    r = store.add_rating(ids[0], "writer", score=1 + k % 5)
    print(r.id, ids[0], flush=True)  # printed only after the commit
    k += 1
"""


def test_sigkill_mid_write_leaves_store_consistent(tmp_path):
    db = tmp_path / "killed.db"
    RatingStore(db).close()
    committed: list[tuple[int, int]] = []
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(15 + 10 * round_):  # let it commit a while, then kill it at an arbitrary point
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            committed.append(tuple(int(x) for x in line.split()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        proc.stdout.close()
    store = RatingStore(db)
    assert store.integrity_check() == "ok"
    by_id = {r.id: r for r in store.ratings()}
    assert all(rid in by_id and by_id[rid].sample_id == sid for rid, sid in committed)
    n_samples = len(store.samples())
    assert n_samples % 20 == 0 and n_samples >= 20 * len(committed)  # no half-written batch of samples
    # one rating per batch; a kill between a batch's commit and its rating's commit leaves one batch unrated
    assert 0 <= n_samples // 20 - len(by_id) <= 3
    store.add_rating(store.samples()[-1].id, "after", score=3)  # still writable
