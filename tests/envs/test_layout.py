"""textgym/envs/layout.py: observations (prefixes left-aligned) to the left-padded layout, numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest

from textgym.envs import BatchedTextGenEnv
from textgym.envs.layout import obs_to_left_padded


def test_obs_to_left_padded_moves_prefixes_right():
    ids = np.array([[5, 6, 0, 0], [1, 2, 3, 0]])
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    out_ids, out_mask = obs_to_left_padded(ids, mask, pad_token_id=0)
    assert out_ids.tolist() == [[0, 5, 6], [1, 2, 3]] and out_ids.dtype == np.int64
    assert out_mask.tolist() == [[0, 1, 1], [1, 1, 1]] and out_mask.dtype == np.int64
    with pytest.raises(ValueError, match="same"):
        obs_to_left_padded(ids, mask[:, :3], 0)


def test_torch_tensors_in_torch_tensors_out():
    torch = pytest.importorskip("torch")
    ids = torch.tensor([[5, 6, 9, 9], [1, 2, 3, 9]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    out_ids, out_mask = obs_to_left_padded(ids, mask, pad_token_id=9)
    assert isinstance(out_ids, torch.Tensor) and out_ids.dtype == torch.long and out_ids.device == ids.device
    assert out_ids.tolist() == [[9, 5, 6], [1, 2, 3]] and out_mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_on_a_batched_env_the_rows_end_at_the_same_column():
    env = BatchedTextGenEnv(4, tokenizer="char:abc>", prompts="gen:copy", scorer="copy", max_new_tokens=5)
    obs, _ = env.reset(seed=3)
    ids, mask = obs_to_left_padded(obs["input_ids"], obs["attention_mask"], env.pad_token_id)
    assert ids.shape == (4, int(env.prompt_lengths.max()))
    for i in range(4):
        n = int(env.prompt_lengths[i])
        assert ids[i, ids.shape[1] - n:].tolist() == env.input_ids[i, :n].tolist()
        assert mask[i].tolist() == [0] * (ids.shape[1] - n) + [1] * n
