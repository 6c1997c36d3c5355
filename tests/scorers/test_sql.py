"""Tests of textgym/scorers/sql.py: correct queries for every question kind score 1, and hostile queries (the model's
text is untrusted code) score 0 within the time budget, touch no file, and leave the process unharmed."""

from __future__ import annotations

import os
import sqlite3
import time

import numpy as np
import pytest

from textgym.core import Sample
from textgym.scorers import make_scorer, score_batch_details
from textgym.scorers.sql import SQLScorer, extract_query, run_query
from textgym.tasks import KINDS, SQLTask, sql_prompts

GOLD = {  # a correct query for each question kind; {c} is the question's column, {thr} the count's threshold
    "mean": "SELECT AVG({c}) FROM t;",
    "sum": "SELECT SUM({c}) FROM t;",
    "max": "SELECT MAX({c}) FROM t;",
    "min": "SELECT MIN({c}) FROM t;",
    "count": "SELECT COUNT(*) FROM t WHERE {c} > {thr};",  # COUNT(*): a read of t with no column
    "argmax": "SELECT item FROM t ORDER BY {c} DESC LIMIT 1;",
    "argmin": "SELECT item FROM t ORDER BY {c} ASC LIMIT 1;",
}


def gold(meta) -> str:
    return GOLD[meta["kind"]].format(c=meta["column"], thr=meta.get("threshold"))


@pytest.fixture(scope="module")
def prompts():
    return list(sql_prompts(n=140, seed=3))


def sample(prompt, completion: str) -> Sample:
    return Sample(prompt.text, completion, meta=prompt.meta)


def test_correct_queries_score_one_for_every_kind(prompts):
    assert {p.meta["kind"] for p in prompts} == set(KINDS)
    s = SQLScorer()
    for wrap in ("{q}", "```sql\n{q}\n```", "Here is the query:\n```sqlite\n{q}\n```", "  {q}  ", "Query:\n{q}"):
        samples = [sample(p, wrap.format(q=gold(p.meta))) for p in prompts]
        parts, details = s.score_details(samples)
        bad = [(p.meta["kind"], gold(p.meta), d) for p, ok, d in zip(prompts, parts["correct"], details) if not ok]
        assert not bad, bad[:3]
        assert (parts["valid"] == 1).all() and all(d == {} for d in details)
        np.testing.assert_array_equal(s.score(samples), 1.0)


def test_wrong_but_valid_query_and_valid_weight(prompts):
    p = next(p for p in prompts if p.meta["kind"] == "max")
    wrong = sample(p, f"SELECT MIN({p.meta['column']}) FROM t;")
    assert SQLScorer().score([wrong]).tolist() == [0.0]
    scorer = make_scorer({"name": "sql", "valid_weight": 0.1})
    scores, parts, details = score_batch_details(scorer, [wrong, sample(p, gold(p.meta))])
    assert scores.tolist() == pytest.approx([0.1, 1.1]) and parts["valid"].tolist() == [1, 1]
    assert details == [{}, {}]


def test_typed_weight_pays_an_answer_of_the_right_type(prompts):
    """``typed``: an item of the table for a label question, a number for the others; a part (and a weight) only
    when ``typed_weight > 0``, so the default score and parts are unchanged."""
    amax = next(p for p in prompts if p.meta["kind"] == "argmax")
    mx = next(p for p in prompts if p.meta["kind"] == "max")
    col, other = amax.meta["column"], next(r[0] for r in amax.meta["rows"] if r[0] != amax.meta["answer"])
    samples = [sample(amax, f"SELECT MAX({col}) FROM t"),  # a number for a label question: valid only
               sample(amax, f"SELECT '{other}'"),  # an item, the wrong one: valid and typed
               sample(amax, gold(amax.meta)),  # right: all three
               sample(mx, "SELECT item FROM t"),  # a label for a number question: valid only
               sample(mx, f"SELECT MIN({mx.meta['column']}) FROM t"),  # a number, wrong: valid and typed
               sample(mx, "SELECT 'lamp' FROM t; DROP TABLE t")]  # refused: nothing
    scorer = make_scorer({"name": "sql", "valid_weight": 0.1, "typed_weight": 0.2})
    scores, parts, _ = score_batch_details(scorer, samples)
    assert parts["typed"].tolist() == [0, 1, 1, 0, 1, 0] and parts["correct"].tolist() == [0, 0, 1, 0, 0, 0]
    assert scores.tolist() == pytest.approx([0.1, 0.3, 1.3, 0.1, 0.3, 0.0])
    assert "typed" not in SQLScorer(valid_weight=0.1).score_parts(samples)
    with pytest.raises(ValueError, match="typed_weight must be in"):
        SQLScorer(typed_weight=2)


def test_labels_are_case_insensitive_and_numbers_within_tolerance(prompts):
    p = next(p for p in prompts if p.meta["kind"] == "argmax")
    assert SQLScorer().judge(f"SELECT UPPER(item) FROM t ORDER BY {p.meta['column']} DESC LIMIT 1", p.meta)[1] == 1
    m = next(p for p in prompts if p.meta["kind"] == "mean" and p.meta["column"] == "price")
    c = m.meta["column"]
    assert SQLScorer().judge(f"SELECT ROUND(AVG({c}), 2) FROM t", m.meta)[1] == 1  # within abs_tol 0.01
    assert SQLScorer().judge(f"SELECT AVG({c}) + 0.5 FROM t", m.meta)[1] == 0
    assert SQLScorer().judge(f"SELECT CAST(AVG({c}) AS TEXT) FROM t", m.meta)[1] == 1  # a numeric string counts


def test_extract_query():
    assert extract_query("```sql\nSELECT 1;\n```\nThis returns one.") == "SELECT 1;"
    assert extract_query("Sure!\nSELECT a FROM t;") == "SELECT a FROM t;"
    assert extract_query("Sure! SELECT a FROM t;") == ""  # a query starts its line
    assert extract_query("CREATE TABLE u AS SELECT 1") == ""
    assert extract_query("WITH x AS (SELECT 1) SELECT * FROM x") == "WITH x AS (SELECT 1) SELECT * FROM x"
    assert extract_query("I do not know.") == ""


# Each must score 0 with an sql_error, quickly, without creating a file or hurting the process.
HOSTILE = [
    "ATTACH DATABASE '{tmp}/evil.db' AS evil;",
    "SELECT 1; ATTACH DATABASE '{tmp}/evil2.db' AS evil;",
    "WITH x AS (SELECT 1) ATTACH '{tmp}/evil3.db' AS e;",
    "VACUUM INTO '{tmp}/copy.db';",
    "SELECT 1 FROM t; VACUUM INTO '{tmp}/copy2.db';",
    "PRAGMA journal_mode = WAL;",
    "SELECT * FROM pragma_database_list;",
    "SELECT load_extension('{tmp}/evil.so');",
    "SELECT load_extension('libc.so.6', 'system');",
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r;",
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x FROM r) SELECT MAX(x) FROM r;",
    "SELECT zeroblob(2000000000);",
    "SELECT length(randomblob(1000000000));",
    "SELECT printf('%.*c', 1000000000, 'x');",
    "SELECT format('%.*c', 1000000000, 'x');",
    "SELECT replace(hex(zeroblob(60000)), '0', '00000000');",
    "SELECT COUNT(*) FROM t a, t b, t c, t d, t e, t f, t g, t h, t i, t j;",
    "SELECT SUM(a.price + b.price) FROM t a CROSS JOIN t b CROSS JOIN t c CROSS JOIN t d CROSS JOIN t e "
    "CROSS JOIN t f CROSS JOIN t g CROSS JOIN t h;",
    "SELECT 1; DROP TABLE t;",
    "DROP TABLE t;",
    "INSERT INTO t VALUES ('x', 1);",
    "SELECT 1; INSERT INTO t VALUES ('x', 1);",
    "UPDATE t SET item = 'x';",
    "DELETE FROM t;",
    "CREATE TEMP TABLE u AS SELECT * FROM t;",
    "CREATE TABLE u (a);",
    "SELECT 1 /* comment trick */; DROP TABLE t; -- ",
    "SELECT 1 -- \n; ATTACH '{tmp}/evil4.db' AS e;",
    "/* SELECT */ ATTACH '{tmp}/evil5.db' AS e;",
    "SELECT sql FROM sqlite_master;",
    "SELECT name FROM sqlite_schema;",
    "SELECT * FROM sqlite_temp_master;",
    "SELECT COUNT(*) FROM sqlite_master;",
    "BEGIN; SELECT 1;",
    "SAVEPOINT a;",
    "SELECT fts3_tokenizer('simple');",
    "SELECT " + "(" * 500 + "1" + ")" * 500 + ";",
    "SELECT '" + "a" * 20_000 + "';",
    "ANALYZE;",
    "REINDEX;",
    "SELECT * FROM nonexistent_table;",
    "SELECT readfile('/etc/passwd');",
]


def test_hostile_queries_score_zero_quickly_and_touch_no_file(prompts, tmp_path, monkeypatch):
    assert len(HOSTILE) >= 25
    monkeypatch.chdir(tmp_path)  # a relative path would land here
    before = set(os.listdir(tmp_path))
    p = next(p for p in prompts if p.meta["kind"] == "max")
    s = SQLScorer(valid_weight=0.1)  # even with a weight on valid: none of these is a valid query
    for q in HOSTILE:
        q = q.format(tmp=tmp_path)
        t0 = time.perf_counter()
        for completion in (q, f"```sql\n{q}\n```"):
            scores, parts, details = score_batch_details(s, [sample(p, completion)])
            assert scores.tolist() == [0.0], (q[:80], parts, details)
            assert "sql_error" in details[0], q[:80]
        assert time.perf_counter() - t0 < 1.0, q[:80]  # two runs; each is cut within the 50 ms budget + setup
    assert set(os.listdir(tmp_path)) == before  # no file created
    # the process is unharmed: sqlite3 still works, and a correct query still scores 1
    assert sqlite3.connect(":memory:").execute("SELECT 2").fetchone() == (2,)
    assert s.score([sample(p, gold(p.meta))]).tolist() == [1.1]


def test_runaway_queries_are_cut_within_the_budget(prompts):
    p = prompts[0]
    for q in ("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r",
              "SELECT COUNT(*) FROM t a, t b, t c, t d, t e, t f, t g, t h, t i, t j"):
        for steps in (10**12, 10**6):  # the wall-clock budget alone, then the step budget
            t0 = time.perf_counter()
            with pytest.raises(sqlite3.OperationalError, match="interrupted"):
                run_query(q, p.meta["columns"], p.meta["rows"], max_vm_steps=steps, time_budget_s=0.05)
            assert time.perf_counter() - t0 < 0.5


def test_result_rows_are_capped(prompts):
    p = prompts[0]
    rows = run_query("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x FROM r",
                     p.meta["columns"], p.meta["rows"], max_rows=3)
    assert rows == [(1,), (2,), (3,)]  # a lazy cursor: the endless CTE is never run past 3 rows


def test_bad_meta_and_arguments():
    with pytest.raises(ValueError, match="gen:sql"):
        SQLScorer().judge("SELECT 1", {"answer": 1})
    with pytest.raises(ValueError, match="valid_weight"):
        SQLScorer(valid_weight=2)
    bad = {"answer": 1, "columns": [["a; DROP", "TEXT"]], "rows": [["x"]]}
    assert SQLScorer().judge("SELECT 1", bad)[2].startswith("ValueError")  # a broken table: zero, not a crash


def test_sql_env_episode_ends_at_semicolon_or_fence_and_reports_errors():
    import gymnasium as gym

    import textgym  # noqa: F401

    env = gym.make("TextGen-SQL-v0", tokenizer="byte").unwrapped
    assert env.chat_template is False  # "auto": the byte tokenizer has no template

    def run(text):
        env.reset(seed=1)
        info = {}
        for i, a in enumerate(env.tokenizer.encode(text)):
            _, r, done, _, info = env.step(a)
            if done:
                return text[: i + 1], r, info
        return text, None, info

    env.reset(seed=1)
    meta = env.prompt.meta
    q = gold(meta)
    done_at, r, info = run(q + " and more")
    assert done_at == q and r == 1.0 and info["end_reason"] == "stop"
    fenced = "```sql\n" + q[:-1] + "\n```"
    done_at, r, info = run(fenced + " trailing")
    assert done_at == fenced and r == 1.0
    _, r, info = run("SELECT sql FROM sqlite_master;")
    assert r == 0.0 and "prohibited" in info["sql_error"]
    _, r, info = run("I cannot help with that, as I do not know the SQL language at all.")
    assert r == 0.0 and info["end_reason"] == "budget" and info["sql_error"].startswith("no query")

    # the batched env gives the same infos, sql_error only where there is one
    from textgym.envs.vector import BatchedTextGenEnv

    venv = BatchedTextGenEnv.from_env(env, 2, autoreset_mode="disabled")
    venv.reset(seed=1, options={"prompts": [env.prompt, env.prompt]})
    texts = [env.tokenizer.encode(q), env.tokenizer.encode("SELECT nope FROM t;")]
    infos = {}
    for t in range(max(map(len, texts))):
        _, _, done, _, step_infos = venv.step([x[min(t, len(x) - 1)] for x in texts])
        if step_infos.get("_score", np.zeros(2, bool)).any():
            infos = step_infos if not infos else infos | {k: v for k, v in step_infos.items() if k.endswith("error")}
        if done.all():
            break
    assert venv.scores.tolist() == [1.0, 0.0]
    assert infos["_sql_error"].tolist() == [False, True] and "no such column" in infos["sql_error"][1]


def test_sql_task_meta_is_typed():
    p = SQLTask(min_rows=4, max_rows=4).sample(np.random.default_rng(0))
    assert p.meta["columns"][0] == ["item", "TEXT"] and len(p.meta["rows"]) == 4
    types = dict(p.meta["columns"])
    for row in p.meta["rows"]:
        for (name, ty), v in zip(p.meta["columns"], row):
            assert isinstance(v, {"TEXT": str, "INTEGER": int, "REAL": float}[ty]), (name, v)
    assert "CREATE TABLE t (" in p.text and "SELECT" in p.text and set(types) <= {"item", "price", "qty", "weight"}
