"""``examples/data_analysis.py`` end to end on a tiny random GPT-2 and the byte tokenizer: one PPO iteration,
greedy accuracy before and after, printed and written to ``OUT/accuracy.json``. (``examples/human_feedback.py``
has its own test in ``tests/human/test_example_e2e.py``.)"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import make_tiny_gpt2

pytest.importorskip("torch")
pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


def test_data_analysis_example_reports_accuracy_before_and_after(tmp_path, capsys):
    example = load_example("data_analysis")
    model = tmp_path / "tiny-gpt2"
    make_tiny_gpt2(vocab_size=257, n_positions=512).save_pretrained(model)  # the byte tokenizer has 257 ids
    out = tmp_path / "run"
    code = example.main(["--model", str(model), "--tokenizer", "byte", "--num-envs", "4", "--max-new-tokens", "4",
                         "--trainable-layers", "1", "--iterations", "1", "--eval-batches", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    acc = {m[0]: float(m[1]) for m in re.findall(r"^(before|after): accuracy ([0-9.]+) \+-", printed, re.M)}
    assert set(acc) == {"before", "after"} and all(0.0 <= a <= 1.0 for a in acc.values()), printed
    saved = json.loads((out / "accuracy.json").read_text())
    for name in ("before", "after"):
        assert saved[name]["n"] == 4  # eval batches x num_envs
        assert 0.0 <= saved[name]["accuracy"] <= 1.0 and math.isfinite(saved[name]["score"])
        assert saved[name]["accuracy"] == pytest.approx(acc[name], abs=5e-4)
    assert (out / "metrics.csv").is_file() and (out / "final" / "config.json").is_file()
