"""agents/logger.py: CSV rows and header widening, resume, TensorBoard events, the plot."""

from __future__ import annotations

import csv

import pytest

from agents.logger import MetricsLogger, plot_metrics, read_metrics


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_call_and_header_widens(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(0, {"a": 1.0})
        log.log(5, {"a": 2.0, "b": 3.0})
    r = rows(tmp_path / "metrics.csv")
    assert [x["step"] for x in r] == ["0", "5"]
    assert r[0]["b"] == "" and r[1]["b"] == "3.0"


def test_resume_appends_and_fresh_overwrites(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(0, {"a": 1.0})
    with MetricsLogger(tmp_path, tensorboard=False, resume=True) as log:
        log.log(1, {"c": 2.0})
    assert read_metrics(tmp_path / "metrics.csv")["step"] == [0.0, 1.0]
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(7, {"a": 1.0})
    assert read_metrics(tmp_path / "metrics.csv")["step"] == [7.0]


def test_bad_calls(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="'step'"):
        log.log(0, {"step": 1.0})
    log.close()
    with pytest.raises(ValueError, match="after close"):
        log.log(0, {"a": 1.0})


def test_tensorboard_events_written(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsLogger(tmp_path) as log:
        log.log(0, {"train/approx_kl": 0.01})
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_plot_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for i in range(5):
            log.log(i, {"rollout/ep_rew_mean": i * 2.0, "train/value_loss": 1.0 / (i + 1)})
    out = plot_metrics(tmp_path / "metrics.csv", ["rollout/ep_rew_mean", "train/value_loss"], tmp_path / "p.png",
                       title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not in"):
        plot_metrics(tmp_path / "metrics.csv", ["nope"], tmp_path / "q.png")
