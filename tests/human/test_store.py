"""RatingStore: round trips, pending, each kind of rating, undo, duplicates, migrations, JSONL."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agents.cli import main as cli_main
from textgym.core import Sample
from textgym.human.store import MIGRATIONS, SCHEMA_VERSION, DuplicateRating, RatingError, RatingStore, parse_scale


def test_sample_round_trip(store):
    s = Sample(prompt="Hi", completion=" there", prompt_ids=(1, 2), completion_ids=(3, 4), tokens=(" the", "re"),
               meta={"task": "x", "n": [1, 2]})
    (i,) = store.add_samples([s], run_id="run1", model_id="gpt2")
    got = store.get_sample(i)
    assert (got.prompt, got.completion, got.prompt_ids, got.completion_ids, got.tokens) == \
        ("Hi", " there", (1, 2), (3, 4), (" the", "re"))
    assert (got.run_id, got.model_id, dict(got.meta)) == ("run1", "gpt2", {"task": "x", "n": [1, 2]})
    assert got.to_sample() == Sample("Hi", " there", (1, 2), (3, 4), (" the", "re"), {"task": "x", "n": [1, 2]})
    assert store.samples(run_id="run1") == [got] and store.samples(run_id="other") == []


def test_three_kinds_of_rating_and_pending(store):
    a, b, c = store.add_samples([{"prompt": "p", "completion": "x", "tokens": ["x"]},
                                 {"prompt": "p", "completion": "y"}, {"prompt": "q", "completion": "z"}])
    assert [s.id for s in store.pending("ann")] == [a, b, c]
    store.add_rating(a, "ann", score=4)
    store.add_rating(a, "bob", token_scores=[-1])
    assert [s.id for s in store.pending("ann")] == [b, c]
    assert [s.id for s in store.pending()] == [b, c]  # no rating by anyone
    pref = store.add_rating(b, "cat", preferred=b, other_id=a)
    assert (pref.kind, pref.preferred, {pref.sample_id, pref.other_id}) == ("preference", b, {a, b})
    assert [s.id for s in store.pending("cat")] == [c]
    kinds = sorted(r.kind for r in store.ratings(sample_id=a))
    assert kinds == ["preference", "score", "tokens"]
    assert store.stats() == {"samples": 3, "pending": 1, "ratings": 3, "scale": [1.0, 5.0]}
    assert store.stats("ann")["pending"] == 2


def test_next_pair_only_same_prompt_and_not_yet_compared(store):
    a, b, c = store.add_samples([{"prompt": "p", "completion": "x"}, {"prompt": "p", "completion": "y"},
                                 {"prompt": "q", "completion": "z"}])
    pair = store.next_pair("ann")
    assert (pair[0].id, pair[1].id) == (a, b)
    store.add_rating(a, "ann", preferred=a, other_id=b)
    assert store.next_pair("ann") is None
    assert store.next_pair("bob") is not None
    with pytest.raises(DuplicateRating):
        store.add_rating(b, "ann", preferred=b, other_id=a)  # the same pair in the other order
    with pytest.raises(RatingError, match="different prompts"):
        store.add_rating(a, "ann", preferred=a, other_id=c)


@pytest.mark.parametrize("kwargs, match", [
    ({"score": 6}, "within the scale"), ({"score": 0.5}, "within the scale"), ({"score": float("nan")}, "finite"),
    ({"score": "3"}, "number"), ({"score": True}, "number"), ({}, "exactly one"),
    ({"score": 3, "preferred": 1}, "exactly one"), ({"token_scores": [1, 0]}, "1 tokens"),
    ({"token_scores": [2]}, "within -1..1"), ({"preferred": 1}, "other_id"),
    ({"preferred": 7, "other_id": 1}, "one of"),
])
def test_bad_ratings_raise_and_store_nothing(store, kwargs, match):
    store.add_samples([{"prompt": "p", "completion": "x", "tokens": ["x"]}])
    with pytest.raises(RatingError, match=match):
        store.add_rating(1, "ann", **kwargs)
    assert store.ratings(include_retracted=True) == []


def test_unknown_sample_and_bad_rater(store):
    with pytest.raises(RatingError, match="unknown sample id 5"):
        store.add_rating(5, "ann", score=3)
    store.add_samples([{"prompt": "p", "completion": "x"}])
    with pytest.raises(RatingError, match="rater"):
        store.add_rating(1, "  ", score=3)


def test_duplicate_uid_and_undo(store):
    store.add_samples([{"prompt": "p", "completion": "x"}])
    r1 = store.add_rating(1, "ann", score=2, uid="u-1")
    assert store.add_rating(1, "ann", score=2, uid="u-1") == r1  # a retry counts once
    with pytest.raises(DuplicateRating):
        store.add_rating(1, "ann", score=5)
    assert store.undo("ann") == r1
    assert store.undo("ann") is None
    r2 = store.add_rating(1, "ann", score=5)
    everything = store.ratings(include_retracted=True)
    assert [r.score for r in everything] == [2, 5] and everything[0].retracted is not None  # undo keeps it
    assert store.ratings() == [r2]


def test_scale_is_stored_and_checked(tmp_path):
    s = RatingStore(tmp_path / "r.db", scale="0-10")
    s.add_samples([{"prompt": "p", "completion": "x"}])
    assert RatingStore(tmp_path / "r.db").scale == (0.0, 10.0)
    assert s.add_rating(1, "a", score=10).scale == (0.0, 10.0)
    assert parse_scale("-2-2") == (-2.0, 2.0)
    for bad in ("5-1", "1", "a-b"):
        with pytest.raises(ValueError, match="scale"):
            parse_scale(bad)


def test_migration_from_version_1_keeps_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO samples(prompt, completion, created) VALUES ('p', 'c', 1.0)")
    conn.execute("INSERT INTO ratings(sample_id, rater, created, kind, score, scale_min, scale_max) "
                 "VALUES (1, 'ann', 2.0, 'score', 4, 1, 5)")
    conn.commit()
    conn.close()
    store = RatingStore(path)
    assert store.schema_version == SCHEMA_VERSION == 2
    (r,) = store.ratings()
    assert (r.sample_id, r.rater, r.score, r.retracted, r.uid) == (1, "ann", 4.0, None, None)
    assert store.undo("ann") is not None  # the v2 column works on migrated data
    assert store.integrity_check() == "ok"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match="newer than this textgym"):
        RatingStore(path)


def test_wal_mode(store):
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_jsonl_export_import_round_trip(store, tmp_path):
    a, b = store.add_samples([{"prompt": "p", "completion": "x", "tokens": ["x"], "completion_ids": [7],
                               "meta": {"k": 1}}, {"prompt": "p", "completion": "y"}], run_id="r")
    store.add_rating(a, "ann", score=5)
    store.add_rating(a, "bob", token_scores=[1])
    store.add_rating(b, "cat", preferred=b, other_id=a)
    store.add_rating(b, "ann", score=1)
    store.undo("ann")
    out = tmp_path / "out.jsonl"
    assert store.export_jsonl(out) == 2
    other = RatingStore(tmp_path / "copy.db")
    assert other.import_jsonl(out) == (2, 4)
    assert [s.to_dict() | {"id": 0} for s in other.samples()] == [s.to_dict() | {"id": 0} for s in store.samples()]
    assert [r.to_dict() for r in other.ratings(include_retracted=True)] == \
        [r.to_dict() for r in store.ratings(include_retracted=True)]


def test_jsonl_import_minimal_lines(store, tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": "d", "meta": {"x": 1}}\n')
    assert store.import_jsonl(f, run_id="imp") == (2, 0)
    assert [(s.prompt, s.completion, s.run_id) for s in store.samples()] == [("a", "b", "imp"), ("c", "d", "imp")]


@pytest.mark.parametrize("second_line, match", [
    ("not json", r"in.jsonl:2: not valid JSON"), ('["a"]', r"in.jsonl:2: each line must be a JSON object"),
    ('{"prompt": "a"}', r"in.jsonl:2: a sample needs 'completion'"),
    ('{"prompt": 1, "completion": "b"}', r"in.jsonl:2: .*must be a string"),
    ('{"prompt": "a", "completion": "b", "ratings": [{"rater": "x", "score": 9}]}', r"in.jsonl:2: .*scale"),
])
def test_jsonl_import_errors_name_the_line_and_import_nothing(store, tmp_path, second_line, match):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "ok", "completion": "fine"}\n' + second_line + "\n")
    with pytest.raises(ValueError, match=match):
        store.import_jsonl(f)
    assert store.samples() == []  # all or nothing


def test_cli_samples_import_export(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) for i in range(3)) + "\n")
    db = str(tmp_path / "r.db")
    assert cli_main(["samples", "import", db, str(src)]) == 0
    assert "imported 3 samples" in capsys.readouterr().out
    dst = tmp_path / "out.jsonl"
    assert cli_main(["samples", "export", db, str(dst)]) == 0
    assert [json.loads(x)["completion"] for x in dst.read_text().splitlines()] == ["c0", "c1", "c2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert cli_main(["samples", "import", db, str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
