"""textgym/human/reward_model.py: a saved reward model loads strictly (a weight missing from the file is an
error naming it; only buffers may be absent) and scores through the scorer registry."""

from __future__ import annotations

import pytest

from textgym.core import Sample
from textgym.human.reward_model import WEIGHTS_NAME, RewardModel, RewardModelScorer, load_reward_model
from textgym.scorers import make_scorer, score_batch

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture
def rm_dir(tmp_path):
    from agents.reward_model import build_backbone

    backbone, tokenizer = build_backbone("tiny", seed=0)
    return RewardModel(backbone, tokenizer, max_length=32).save(tmp_path / "rm")


def _rewrite_weights(folder, edit):
    sd = safetensors_torch.load_file(str(folder / WEIGHTS_NAME))
    edit(sd)
    safetensors_torch.save_file(sd, str(folder / WEIGHTS_NAME))


def test_a_saved_model_loads_and_scores_the_same(rm_dir):
    rm = load_reward_model(rm_dir)
    scorer = make_scorer(f"reward-model:{rm_dir}")
    assert isinstance(scorer, RewardModelScorer)
    samples = [Sample("Review:", "a great film"), Sample("Review:", "awful")]
    scores, _ = score_batch(scorer, samples)
    with torch.no_grad():
        direct = rm([s.prompt for s in samples], [s.completion for s in samples]).numpy()
    assert scores == pytest.approx(direct, rel=1e-6, abs=1e-7)


def test_a_missing_backbone_weight_is_an_error_naming_it(rm_dir):
    key = "backbone.encoder.layer.1.attention.self.query.weight"
    _rewrite_weights(rm_dir, lambda sd: sd.pop(key))
    with pytest.raises(ValueError, match=r"missing keys \['backbone\.encoder\.layer\.1\.attention\.self\.query"
                                         r"\.weight'\].*train the model again"):
        load_reward_model(rm_dir)


def test_a_missing_head_or_an_unknown_key_is_an_error(rm_dir):
    _rewrite_weights(rm_dir, lambda sd: sd.pop("head.bias"))
    with pytest.raises(ValueError, match=r"missing keys \['head\.bias'\]"):
        load_reward_model(rm_dir)


def test_an_unexpected_weight_is_an_error(rm_dir):
    _rewrite_weights(rm_dir, lambda sd: sd.update({"backbone.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected keys \['backbone\.extra\.weight'\]"):
        load_reward_model(rm_dir)


def test_a_wrong_shape_is_an_error_naming_the_folder(rm_dir):
    _rewrite_weights(rm_dir, lambda sd: sd.update({"head.weight": torch.zeros(1, 3)}))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_reward_model(rm_dir)


def test_only_buffers_may_be_absent(tmp_path):
    from textgym.human.reward_model import _load_strict

    m = torch.nn.Linear(2, 1)
    m.register_buffer("scale", torch.ones(1))  # persistent: in state_dict, but a model can rebuild it
    state = {k: v for k, v in m.state_dict().items() if k != "scale"}
    _load_strict(m, state, tmp_path, "head.")  # a buffer may be absent
    with pytest.raises(ValueError, match=r"missing keys \['head\.weight'\]"):
        _load_strict(m, {"bias": torch.zeros(1), "scale": torch.ones(1)}, tmp_path, "head.")
