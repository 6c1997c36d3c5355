"""Prompts that a chat model expects (issue 9 item 1): the chat_template option, BOS where the tokenizer wants it,
every EOS id of the model's generation_config, task short names, and no missing-EOS penalty after a stop string."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym.envs.text_gen import TextGenEnv
from textgym.envs.vector import BatchedTextGenEnv
from textgym.registration import TASKS, resolve_task, short_name
from textgym.tokenizers import HFTokenizer, encode_prompt, eos_token_ids, make_tokenizer


@pytest.fixture(scope="module")
def default_dir():
    from textgym.default_model import default_model_dir

    try:
        return default_model_dir()
    except ImportError as e:
        pytest.skip(str(e))


def prompt_text(env) -> str:
    obs = env.unwrapped._obs()
    return env.unwrapped.tokenizer.hf.decode(obs["input_ids"][: obs["attention_mask"].sum()])


def test_chat_template_wraps_the_prompt_and_auto_is_the_default_for_data_ids(default_dir):
    for env_id in ("TextGen-DataAnalysis-v0", "TextGen-SQL-v0"):
        env = gym.make(env_id)
        assert env.unwrapped.chat_template is True  # "auto", and the default tokenizer has a template
        _, info = env.reset(seed=0)
        text = prompt_text(env)
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        assert info["prompt"] in text and not info["prompt"].startswith("<|im_start|>")  # scorers see the raw text
    raw = gym.make("TextGen-DataAnalysis-v0", chat_template=False)
    raw.reset(seed=0)
    assert not prompt_text(raw).startswith("<|im_start|>")
    assert gym.make("TextGen-Sentiment-v0").unwrapped.chat_template is False  # other ids keep raw prompts


def test_chat_template_prompt_budget_covers_the_template(default_dir):
    env = gym.make("TextGen-SQL-v0").unwrapped
    lengths = []
    for seed in range(40):
        _, info = env.reset(seed=seed)
        lengths.append(info["prompt_length"])
    assert max(lengths) <= env.max_prompt_tokens
    fixed = TextGenEnv(tokenizer="default", prompts=["hi", "hello there"], scorer="length", chat_template=True)
    tok = fixed.tokenizer
    assert fixed.max_prompt_tokens == len(tok.encode_prompt("hello there", chat_template=True))


def test_chat_template_true_without_a_template_is_a_clear_error():
    with pytest.raises(ValueError, match="has no chat template; pass chat_template=False"):
        TextGenEnv(tokenizer="byte", prompts=["a"], scorer="length", chat_template=True)
    with pytest.raises(ValueError, match="chat_template must be True, False or 'auto'"):
        TextGenEnv(tokenizer="byte", prompts=["a"], scorer="length", chat_template="yes")
    assert TextGenEnv(tokenizer="byte", prompts=["a"], scorer="length", chat_template="auto").chat_template is False
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompt(make_tokenizer("byte"), "a", chat_template=True)


def test_bos_where_the_tokenizer_expects_it(default_dir):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<s>": 0, "</s>": 1, "a": 2, "b": 3}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="a"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    core.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")
    tok = HFTokenizer(hf)
    assert tok.adds_bos and tok.encode("a b") == [2, 3]  # plain encode: no special tokens
    assert tok.encode_prompt("a b") == [0, 2, 3]  # a prompt starts with BOS, as the model was trained
    env = TextGenEnv(tokenizer=tok, prompts=["a b"], scorer="length", max_new_tokens=2)
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"][:3].tolist() == [0, 2, 3] and env.max_prompt_tokens == 3
    assert not make_tokenizer("default").adds_bos  # SmolLM2 uses no BOS


def test_every_generation_config_eos_id_ends_an_episode(default_dir, tmp_path):
    for f in default_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja") or f.name == "special_tokens_map.json":
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    tok = make_tokenizer(str(tmp_path))
    assert eos_token_ids(tok) == (2, 0)  # the tokenizer's EOS first, then the generation config's
    assert eos_token_ids(make_tokenizer("char:ab")) == (2,)
    env = TextGenEnv(tokenizer=tok, prompts=["hi"], scorer="length", max_new_tokens=5)
    for eos in (2, 0):
        env.reset(seed=0)
        _, _, done, _, info = env.step(eos)
        assert done and info["end_reason"] == "eos"
    venv = BatchedTextGenEnv.from_env(env, 3, autoreset_mode="disabled")
    venv.reset(seed=0)
    _, _, done, _, _ = venv.step(np.array([0, 2, 5]))
    assert done.tolist() == [True, True, False]


def test_short_task_names():
    assert [short_name(i) for i in TASKS][:4] == ["default", "sentiment", "data-analysis", "sql"]
    assert resolve_task("sql") == "TextGen-SQL-v0" and resolve_task("data-analysis") == "TextGen-DataAnalysis-v0"
    assert resolve_task("Copy") == "TextGen-Copy-v0" and resolve_task("textgym:TextGen-SQL-v0") == "TextGen-SQL-v0"
    with pytest.raises(ValueError, match=r"unknown task 'sqll'; pass a short name \(default, sentiment, "):
        resolve_task("sqll")
