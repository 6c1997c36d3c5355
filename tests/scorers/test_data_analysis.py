"""Tests for textgym/scorers/data_analysis.py on hand-written tables (answers computed here, independently)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from textgym.core import Sample
from textgym.scorers import score_batch
from textgym.scorers.data_analysis import DataAnalysisScorer, parse_label, parse_number

TABLE = "item,price,qty\napple,2.5,4\nbread,3.0,2\nmilk,1.5,10\ncheese,7.0,1"
PRICES = [2.5, 3.0, 1.5, 7.0]
QTYS = [4, 2, 10, 1]


@pytest.mark.parametrize("text, value", [
    ("12", 12.0), ("12.5", 12.5), ("-3", -3.0), ("1,234", 1234.0), ("$12", 12.0), ("about 12.0", 12.0),
    (" The answer is 3.5.", 3.5), ("-$4.25 total", -4.25), ("1,234.5 and 7", 1234.5), ("+4", 4.0),
    ("no number here", None), ("", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_label_prefers_the_first_candidate_in_the_text():
    labels = ["apple", "bread", "milk"]
    assert parse_label(" Bread, not apple", labels) == "bread"
    assert parse_label("breadcrumbs", labels) is None
    assert parse_label(" Milk.", None) == "milk"


def meta_number(answer):
    return {"answer": answer, "answer_type": "number", "table": TABLE}


def test_known_table_numbers_exact_close_and_unparseable():
    mean_price = sum(PRICES) / len(PRICES)  # 3.5
    total_qty = sum(QTYS)  # 17
    s = DataAnalysisScorer()
    samples = [
        Sample("mean price?", " 3.5", meta=meta_number(mean_price)),
        Sample("mean price?", " about $3.50", meta=meta_number(mean_price)),
        Sample("total qty?", " 17 items", meta=meta_number(total_qty)),
        Sample("total qty?", " 20", meta=meta_number(total_qty)),
        Sample("total qty?", " I don't know", meta=meta_number(total_qty)),
        Sample("max price?", " 7", meta=meta_number(max(PRICES))),
        Sample("count qty > 3?", " 2", meta=meta_number(sum(q > 3 for q in QTYS))),
    ]
    parts = s.score_parts(samples)
    np.testing.assert_array_equal(parts["correct"], [1, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(parts["parsed"], [1, 1, 1, 1, 0, 1, 1])
    closeness_20 = math.exp(-(3 / 17) / 0.25)  # the documented formula, |20 - 17| / 17 at scale 0.25
    assert parts["closeness"][3] == pytest.approx(closeness_20)
    scores, info_parts = score_batch(s, samples)
    np.testing.assert_allclose(scores, [1, 1, 1, 0.5 * closeness_20, 0, 1, 1])
    assert set(info_parts) == {"correct", "closeness", "parsed", "strict", "lenient"}  # the last two: weight 0
    np.testing.assert_allclose(s.score(samples), scores)
    np.testing.assert_array_equal(info_parts["strict"], [1, 0, 0, 0, 0, 1, 1])  # " about $3.50", " 17 items": not alone
    np.testing.assert_array_equal(info_parts["lenient"], [1, 1, 1, 0, 0, 1, 1])


def test_strict_and_lenient_are_reported_apart():
    s = DataAnalysisScorer()
    num = meta_number(17)
    texts = ["17", " 17.", "The answer is 17", "20, or maybe 17", "17 items", "$17", "1 7"]
    parts = s.score_parts([Sample("", t, meta=num) for t in texts])
    np.testing.assert_array_equal(parts["strict"], [1, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(parts["lenient"], [1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(parts["correct"], [1, 1, 1, 0, 1, 1, 0])  # the first number, as before
    label = {"answer": "milk", "answer_type": "label", "labels": ["milk", "tea"]}
    texts = ["Milk", " milk.", "It is milk", "tea or milk", "milky", "tea"]
    parts = s.score_parts([Sample("", t, meta=label) for t in texts])
    np.testing.assert_array_equal(parts["strict"], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(parts["lenient"], [1, 1, 1, 1, 0, 0])


def test_tolerance_and_closeness_decay():
    s = DataAnalysisScorer()
    meta = meta_number(10.0)
    got = s.score([Sample("", x, meta=meta) for x in [" 10.04", " 10.2", " 11", " 15", " 100"]])
    assert got[0] == 1.0  # within abs_tol 0.05
    assert 0.5 > got[1] > got[2] > got[3] > got[4] > 0  # wrong: below 0.5, decaying with the error
    assert DataAnalysisScorer(rel_tol=0.1).score([Sample("", "10.9", meta=meta)])[0] == 1.0


def test_label_answers():
    argmax_qty = ["apple", "bread", "milk", "cheese"][QTYS.index(max(QTYS))]  # milk
    meta = {"answer": argmax_qty, "answer_type": "label", "labels": ["apple", "bread", "milk", "cheese"]}
    s = DataAnalysisScorer()
    parts = s.score_parts([Sample("", " Milk", meta=meta), Sample("", " cheese", meta=meta),
                           Sample("", " none", meta=meta)])
    np.testing.assert_array_equal(parts["correct"], [1, 0, 0])
    np.testing.assert_array_equal(parts["closeness"], [1, 0, 0])
    np.testing.assert_array_equal(parts["parsed"], [1, 1, 0])


def test_missing_answer_is_a_clear_error():
    with pytest.raises(ValueError, match="meta\\['answer'\\]"):
        DataAnalysisScorer().score([Sample("q", "1")])
    with pytest.raises(ValueError, match="scale"):
        DataAnalysisScorer(scale=0)
