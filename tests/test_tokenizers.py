"""Tests for textgym/tokenizers.py: file-free round trips, the Hugging Face adapter on local folders, specs."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textgym.tokenizers import ByteTokenizer, CharTokenizer, HFTokenizer, Tokenizer, WordTokenizer, make_tokenizer


@given(st.text(alphabet="abc>", max_size=30))
def test_char_round_trip(text):
    tok = CharTokenizer("abc>")
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size - 1 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id]) == text  # EOS is not text


@given(st.text(max_size=30))
def test_byte_round_trip_any_unicode(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert tok.decode(ids + [tok.eos_token_id]) == text


def test_word_round_trip_and_token_text():
    tok = WordTokenizer(["The", "quick", "brown", "fox"])
    ids = tok.encode("The quick brown fox")
    assert ids == [0, 1, 2, 3] and tok.decode(ids) == "The quick brown fox"
    assert [tok.token_text(i) for i in ids + [tok.eos_token_id]] == ["The", "quick", "brown", "fox", "<eos>"]
    with pytest.raises(ValueError, match="'cat' is not in"):
        tok.encode("The cat")


def test_char_tokenizer_errors_and_ids():
    tok = CharTokenizer("ab")
    assert (tok.vocab_size, tok.eos_token_id, tok.pad_token_id) == (3, 2, 2)
    assert tok.token_text(2) == "<eos>"
    with pytest.raises(ValueError, match="'z' is not in this CharTokenizer's alphabet"):
        tok.encode("az")
    with pytest.raises(ValueError, match="non-empty alphabet"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer("aa")


@pytest.mark.parametrize("tok", [CharTokenizer("ab>"), ByteTokenizer(), WordTokenizer(["x", "y"])])
def test_pickle_round_trip(tok):
    tok2 = pickle.loads(pickle.dumps(tok))
    assert isinstance(tok2, Tokenizer)
    assert tok2.vocab_size == tok.vocab_size and tok2.eos_token_id == tok.eos_token_id


def test_make_tokenizer_specs():
    assert isinstance(make_tokenizer("byte"), ByteTokenizer)
    char = make_tokenizer("char:abc")
    assert isinstance(char, CharTokenizer) and char.alphabet == "abc"
    word = make_tokenizer("word:The quick")
    assert isinstance(word, WordTokenizer) and word.vocab == ["The", "quick"]
    assert make_tokenizer(char) is char


@pytest.mark.parametrize("spec, err, pattern", [
    ("", ValueError, "tokenizer spec is empty"),
    ("char:", ValueError, "non-empty alphabet"),
    (42, TypeError, "cannot make a tokenizer from 42"),
    (object(), TypeError, "pad_token_id"),
])
def test_make_tokenizer_bad_input(spec, err, pattern):
    with pytest.raises(err, match=pattern):
        make_tokenizer(spec)


def test_hf_missing_local_folder_is_a_clear_error(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(OSError, match="could not load a tokenizer"):
        make_tokenizer(str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def default_dir():
    pytest.importorskip("transformers")
    from textgym.default_model import default_model_dir

    try:
        return default_model_dir()
    except ImportError as e:
        pytest.skip(str(e))


def test_hf_default_folder_round_trip(default_dir):
    tok = make_tokenizer("default")
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == 49152
    text = "The movie was great. Price: $12.50"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id]) == text  # special tokens are skipped
    assert tok.token_text(tok.eos_token_id) == "<|im_end|>"
    assert "".join(tok.token_text(i) for i in ids) == text
    tok2 = pickle.loads(pickle.dumps(tok))
    assert tok2.encode(text) == ids


def test_hf_from_pretrained_local_path(default_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(default_dir))
    hf.save_pretrained(tmp_path)
    for spec in (str(tmp_path), f"hf:{tmp_path}", tmp_path):
        tok = make_tokenizer(spec)
        assert tok.encode("hello world") == hf.encode("hello world", add_special_tokens=False)
        assert tok.eos_token_id == hf.eos_token_id
    hf.add_tokens(["<new-token>"])  # an object is pickled as itself, not reloaded from its (older) files
    wrapped = make_tokenizer(hf)
    assert isinstance(wrapped, HFTokenizer) and wrapped.vocab_size == len(hf)
    restored = pickle.loads(pickle.dumps(wrapped))
    assert restored.vocab_size == wrapped.vocab_size and restored.encode("<new-token>") == [len(hf) - 1]
