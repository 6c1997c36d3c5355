"""The terminal rater driven through stdin: rate, skip, undo, quit, resume."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from textgym.human.store import RatingStore
from textgym.human.terminal import rate_loop


def run(store: RatingStore, keys: str, rater: str = "ann") -> tuple[dict[str, int], str]:
    out = io.StringIO()
    counts = rate_loop(store, rater, io.StringIO(keys), out)
    return counts, out.getvalue()


def test_rate_skip_undo_quit_and_resume(store):
    ids = store.add_samples([{"prompt": "p", "completion": f"completion {i}"} for i in range(4)])
    counts, text = run(store, "3\ns\nu\n4\nq\n")
    # 3 -> sample 1; skip sample 2; undo brings sample 1 back; 4 -> sample 1 again; quit at sample 3
    assert counts == {"rated": 2, "skipped": 1, "undone": 1}
    assert "undid your rating of sample 1" in text
    live = store.ratings(rater="ann")
    assert [(r.sample_id, r.score) for r in live] == [(ids[0], 4.0)]
    assert [r.score for r in store.ratings(rater="ann", include_retracted=True)] == [3.0, 4.0]  # undo keeps it
    # a new session resumes with the first sample the rater has not rated (the skipped one is back)
    counts, text = run(store, "5\n1\n2\n")
    assert counts["rated"] == 3
    assert [(r.sample_id, r.score) for r in store.ratings(rater="ann")] == \
        [(ids[0], 4.0), (ids[1], 5.0), (ids[2], 1.0), (ids[3], 2.0)]
    assert "nothing left to rate for ann" in text


def test_bad_keys_do_not_rate(store):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    counts, text = run(store, "9\nhello\n?\n\nq\n")
    assert counts["rated"] == 0 and store.ratings() == []
    assert "within the scale 1..5" in text and "not a rating: 'hello'" in text and "u = undo" in text


def test_end_of_input_quits_and_other_raters_are_independent(store):
    store.add_samples([{"prompt": "p", "completion": "c"}])
    assert run(store, "2\n")[0]["rated"] == 1
    counts, _ = run(store, "", rater="bob")  # EOF at once: quit, nothing rated
    assert counts["rated"] == 0
    assert [s.id for s in store.pending("bob")] == [1] and store.pending("ann") == []


def test_cli_rate_through_a_pipe(tmp_path):
    db = tmp_path / "r.db"
    RatingStore(db).add_samples([{"prompt": "Say hi", "completion": "<b>hi</b>"}, {"prompt": "p", "completion": "c"}])
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-m", "agents.cli", "rate", str(db), "--rater", "zoe", "--scale", "0-10"],
                          input="10\nq\n", capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "<b>hi</b>" in proc.stdout and "rate 0-10" in proc.stdout
    (r,) = RatingStore(db).ratings()
    assert (r.rater, r.score, r.scale) == ("zoe", 10.0, (0.0, 10.0))
