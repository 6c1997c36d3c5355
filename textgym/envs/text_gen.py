"""TextGenEnv: token-by-token text generation as a Gymnasium environment."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from textgym.core import Prompt, Sample
from textgym.envs.render import ansi_text, text_frame
from textgym.prompts import PromptSource, load_prompts
from textgym.scorers import Scorer, make_scorer, score_batch_details, score_tokens_batch, token_scoring_problem
from textgym.tokenizers import Tokenizer, encode_prompt, eos_token_ids, has_chat_template, make_tokenizer

REWARD_MODES = ("sequence", "token")


def prompt_budget(source: PromptSource, tokenizer: Tokenizer, chat_template: bool = False) -> int:
    """The longest prompt of ``source`` in tokens: encodes a finite set, or asks a generator for its bound (plus
    what the chat template and BOS add around a text)."""
    if hasattr(source, "max_prompt_tokens"):
        extra = 0  # what the template and BOS add (a tokenizer without encode_prompt adds nothing)
        if hasattr(tokenizer, "encode_prompt"):
            extra = len(encode_prompt(tokenizer, "x", chat_template)) - len(tokenizer.encode("x"))
        return int(source.max_prompt_tokens(tokenizer)) + extra
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        return max(len(encode_prompt(tokenizer, source[i].text, chat_template)) for i in range(len(source)))
    raise ValueError(f"cannot tell how long prompts from {source!r} can be: pass max_prompt_tokens=N, or give "
                     "the source a max_prompt_tokens(tokenizer) method")


class _TokenTexts(dict):
    """``tokenizer.token_text`` memoised: a dict lookup per token when building samples (the hot path at every
    episode end and, in per-token reward mode, every step)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def __missing__(self, token_id: int) -> str:
        text = self[token_id] = self.tokenizer.token_text(token_id)
        return text

    def __reduce__(self):  # pickle as an empty cache (it refills itself)
        return (_TokenTexts, (self.tokenizer,))


class TextGenEnv(gym.Env[dict, int]):
    """Generate a completion of a prompt one token at a time; a scorer judges the text.

    ## Description

    The state is a *prefix*: the *prompt*'s token ids followed by the *completion* generated so far. Each
    action appends one token. The episode ends at EOS, at a stop string, or when ``max_new_tokens`` tokens
    have been generated. A *scorer* (scripted rules, VADER sentiment, answer checking, a reward model, a
    person) turns the decoded text into a *score*, which the env pays as reward.

    ## Action Space

    ``Discrete(action_size)``: a token id. ``action_size`` defaults to the tokenizer's vocabulary size; pass
    a model's (often padded) output size instead. Ids at or beyond the tokenizer's vocabulary are not
    valid tokens: stepping one raises ``ValueError``. With ``action_mask="vocab"`` (or a callable),
    ``info["action_mask"]`` is an ``int8`` array of the valid actions.

    ## Observation Space

    ``Dict(input_ids=Box(0, action_size-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``. The prefix sits left-aligned in ``input_ids``; the rest is
    ``pad_token_id``. ``attention_mask`` is 1 on the prefix and 0 on padding, so a pad id equal to EOS is
    never ambiguous. (Not ``MultiDiscrete``: SB3 would one-hot it to ``L x V`` inputs.)

    ## Rewards

    ``reward_mode="sequence"`` (default): 0 at every step, and the scorer's score when the episode ends.
    ``reward_mode="token"``: at every step, the scorer's per-token reward for the token just emitted
    (``score_tokens``, causal). ``info["score"]`` and ``info["score_parts"]`` hold the final score.

    ## Starting State

    A prompt drawn from ``prompts`` with ``self.np_random``, or the one given as ``options={"prompt": p}``
    (a string, a :class:`~textgym.core.Prompt`, a dict with ``"prompt"``, or an index into a prompt set).

    ## Episode End

    ``terminated=True`` when the agent emits EOS (any of ``eos_token_ids``: the tokenizer's EOS and a Hugging
    Face model's ``generation_config`` EOS ids), when the completion contains a stop string, or when it
    reaches ``max_new_tokens`` tokens. The length budget is *termination*, not truncation: the prefix length
    is part of the observation, so the budget is part of the MDP and a value function can see it coming;
    the agents therefore never bootstrap past it. ``truncated`` is always False. ``info["end_reason"]`` is
    ``"eos"``, ``"stop"`` or ``"budget"``.

    ## Arguments

    - ``tokenizer``: ``"default"`` (SmolLM2), ``"byte"``, ``"char:ALPHABET"``, a hub id or folder, or a
      :class:`~textgym.tokenizers.Tokenizer`.
    - ``prompts``: a list, a ``.txt``/``.jsonl``/``.json`` path, ``"builtin:NAME"``, ``"gen:NAME"``, or a
      :class:`~textgym.prompts.PromptSource`. ``prompt_kwargs`` go to a generator.
    - ``scorer``: a scorer name (``"vader"``, ``"target"``, ``"data-analysis"``, ...), dict, list, or object.
    - ``max_new_tokens`` (default 24), ``max_prompt_tokens`` (default: the longest prompt).
    - ``reward_mode``: ``"sequence"`` or ``"token"``. ``stop_strings``: strings (or compiled ``re`` patterns,
      searched for) that end the episode when the completion contains them.
    - ``chat_template``: ``True`` (the prompt is the user turn of the tokenizer's chat template, with the
      generation prompt; a tokenizer without one raises ``ValueError``), ``False`` (the raw text), or ``"auto"``
      (on if the tokenizer has a template). BOS is put first where the tokenizer expects one. The prompt text
      that scorers and infos see stays the raw text.
    - ``action_size``: size of the action space (>= the tokenizer's vocabulary).
    - ``action_mask``: None, ``"vocab"``, or ``callable(prompt: Prompt, completion_ids) -> bool array``.
    - ``render_mode``: ``"ansi"`` (returns a string), ``"human"`` (prints it) or ``"rgb_array"`` (the prefix
      drawn as an ``(H, W, 3)`` uint8 image, for ``RecordVideo`` and SB3's ``make_vec_env``; needs Pillow).

    ## Version History

    - v0: initial version (``render_mode="rgb_array"`` added later; the dynamics are unchanged).
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        tokenizer: str | Tokenizer = "default",
        prompts: Any = "builtin:sentiment",
        scorer: Any = "vader",
        *,
        max_new_tokens: int = 24,
        max_prompt_tokens: int | None = None,
        reward_mode: str = "sequence",
        stop_strings: Sequence[str] = (),
        action_size: int | None = None,
        action_mask: str | Callable[[Prompt, Sequence[int]], np.ndarray] | None = None,
        prompt_kwargs: dict[str, Any] | None = None,
        chat_template: bool | str = False,
        render_mode: str | None = None,
    ) -> None:
        stop_strings = self._check_arguments(max_new_tokens, reward_mode, render_mode, stop_strings)
        if chat_template not in (True, False, "auto"):
            raise ValueError(f"chat_template must be True, False or 'auto', got {chat_template!r}")

        self.tokenizer = make_tokenizer(tokenizer)
        if chat_template is True and not has_chat_template(self.tokenizer):
            raise ValueError(f"chat_template=True, but the tokenizer {self.tokenizer!r} has no chat template; pass "
                             "chat_template=False (or 'auto'), or a tokenizer with a chat template (an instruct "
                             "model's)")
        self.chat_template = has_chat_template(self.tokenizer) if chat_template == "auto" else bool(chat_template)
        self.prompt_source = load_prompts(prompts, **(prompt_kwargs or {}))
        self.scorer: Scorer = make_scorer(scorer)
        why = token_scoring_problem(self.scorer) if reward_mode == "token" else None
        if why is not None:
            raise ValueError(f"reward_mode='token' needs a per-token scorer that scores partial completions; {why}. "
                             "Use reward_mode='sequence', or a scorer with score_tokens.")
        self.reward_mode = reward_mode
        self.stop_strings = tuple(stop_strings)
        self.render_mode = render_mode

        self.vocab_size = int(self.tokenizer.vocab_size)
        self.action_size = self.vocab_size if action_size is None else int(action_size)
        if self.action_size < self.vocab_size:
            raise ValueError(f"action_size={self.action_size} is smaller than the tokenizer's vocabulary "
                             f"({self.vocab_size} ids); the policy's output size must cover every token id. "
                             "Use the model's vocab_size (config.vocab_size), or leave action_size unset.")
        if action_mask not in (None, "vocab") and not callable(action_mask):
            raise ValueError(f"action_mask must be None, 'vocab' or a callable, got {action_mask!r}")
        self._action_mask_fn = action_mask

        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_tokens = (prompt_budget(self.prompt_source, self.tokenizer, self.chat_template)
                                  if max_prompt_tokens is None else int(max_prompt_tokens))
        if self.max_prompt_tokens <= 0:
            raise ValueError(f"max_prompt_tokens must be positive, got {self.max_prompt_tokens}")
        self.max_length = self.max_prompt_tokens + self.max_new_tokens
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self.eos_token_ids = eos_token_ids(self.tokenizer)  # every id that ends an episode (eos_token_id first)
        self._eos_set = frozenset(self.eos_token_ids)
        self.pad_token_id = int(self.tokenizer.pad_token_id)

        L = self.max_length
        self.action_space = spaces.Discrete(self.action_size)
        self.observation_space = spaces.Dict({
            "input_ids": spaces.Box(0, self.action_size - 1, (L,), np.int64),
            "attention_mask": spaces.Box(0, 1, (L,), np.int64),
        })
        self._input_ids = np.full(L, self.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros(L, dtype=np.int64)
        self._encoded: dict[str, tuple[int, ...]] = {}  # prompt text -> ids (prompt sets repeat)
        self._token_texts = _TokenTexts(self.tokenizer)  # token id -> text, filled on first use
        self._prompt: Prompt | None = None
        self._prompt_ids: tuple[int, ...] = ()
        self._completion: list[int] = []
        self._length = 0  # prefix length
        self._done: bool | None = None  # None: never reset
        self._last_info: dict[str, Any] = {}

    @classmethod
    def _check_arguments(cls, max_new_tokens: Any, reward_mode: Any, render_mode: Any,
                         stop_strings: str | Sequence[str | re.Pattern]) -> tuple[str | re.Pattern, ...]:
        """Raise ``ValueError`` for arguments that cannot work (before anything is loaded); the stop strings."""
        if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool) \
                or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if render_mode is not None and render_mode not in cls.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {cls.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        if isinstance(stop_strings, str):
            stop_strings = (stop_strings,)
        if any(not (isinstance(s, str) and s or isinstance(s, re.Pattern) and s.pattern) for s in stop_strings):
            raise ValueError(f"stop_strings must be non-empty strings or compiled patterns, got {stop_strings!r}")
        return tuple(stop_strings)

    # -- helpers shared with the batched vector env ------------------------------------------------------
    def encode_prompt(self, prompt: Prompt) -> tuple[int, ...]:
        """Prompt ids, checked against the budget (cached per prompt text)."""
        ids = self._encoded.get(prompt.text)
        if ids is None:
            if not prompt.text:
                raise ValueError("the prompt is empty; give at least one token of prompt text")
            ids = tuple(encode_prompt(self.tokenizer, prompt.text, self.chat_template))
            if len(ids) == 0:
                raise ValueError(f"prompt {prompt.text!r} encodes to no tokens")
            if len(ids) > self.max_prompt_tokens:
                raise ValueError(
                    f"prompt has {len(ids)} tokens but max_prompt_tokens={self.max_prompt_tokens}: "
                    f"{prompt.text[:60]!r}... Pass a larger max_prompt_tokens, or a shorter prompt.")
            if len(self._encoded) < 100_000:
                self._encoded[prompt.text] = ids
        return ids

    def resolve_prompt(self, options: dict[str, Any] | None, rng: np.random.Generator | None = None) -> Prompt:
        """The prompt for a reset: ``options["prompt"]`` if given, else one drawn with ``rng`` (default
        ``self.np_random``; the batched vector env passes each sub-env's generator)."""
        if options and "prompt" in options:
            p = options["prompt"]
            if isinstance(p, (int, np.integer)) and not isinstance(p, bool):
                if not hasattr(self.prompt_source, "__getitem__"):
                    raise ValueError("options['prompt'] is an index, but the prompt source is a generator; "
                                     "pass the prompt text instead")
                n = len(self.prompt_source)
                if not 0 <= p < n:
                    raise ValueError(f"options['prompt']={p} is out of range for a prompt set of {n}")
                return self.prompt_source[int(p)]
            if isinstance(p, Prompt):
                return p
            if isinstance(p, str):
                return Prompt(p)
            if isinstance(p, dict) and isinstance(p.get("prompt"), str):
                return Prompt(p["prompt"], {k: v for k, v in p.items() if k != "prompt"})
            raise TypeError(f"options['prompt'] must be a str, Prompt, dict with 'prompt', or an index; got {p!r}")
        return self.prompt_source.sample(self.np_random if rng is None else rng)

    def make_sample(self, prompt: Prompt, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                    finished: bool = True) -> Sample:
        """The one place where ids become the text a scorer sees (``completion_ids``: any ints, numpy's too)."""
        return self._sample(prompt, tuple(map(int, prompt_ids)), tuple(map(int, completion_ids)), finished)

    def _sample(self, prompt: Prompt, prompt_ids: tuple[int, ...], ids: tuple[int, ...],
                finished: bool = True) -> Sample:
        """:meth:`make_sample` for ids that are already tuples of Python ints (the envs' hot path)."""
        return Sample(prompt.text, self.tokenizer.decode(ids), prompt_ids, ids,
                      tuple(map(self._token_texts.__getitem__, ids)), prompt.meta, finished)

    def check_action(self, action: Any) -> int:
        try:
            a = operator.index(action)
        except TypeError:
            raise ValueError(f"action must be an integer token id, got {action!r} "
                             f"({type(action).__name__})") from None
        if not 0 <= a < self.vocab_size:
            if 0 <= a < self.action_size:
                raise ValueError(f"action {a} is a padding id beyond the tokenizer's vocabulary "
                                 f"({self.vocab_size} ids); mask logits >= {self.vocab_size} in the policy")
            raise ValueError(f"action {a} is outside the action space Discrete({self.action_size})")
        return a

    def hits_stop(self, completion_ids: Sequence[int]) -> bool:
        if not self.stop_strings:
            return False
        text = self.tokenizer.decode(completion_ids)
        return any(s.search(text) is not None if isinstance(s, re.Pattern) else s in text for s in self.stop_strings)

    def action_mask(self, prompt: Prompt, completion_ids: Sequence[int]) -> np.ndarray | None:
        if self._action_mask_fn is None:
            return None
        if self._action_mask_fn == "vocab":
            m = np.zeros(self.action_size, dtype=np.int8)
            m[: self.vocab_size] = 1
            return m
        m = np.asarray(self._action_mask_fn(prompt, completion_ids)).astype(np.int8)
        if m.shape != (self.action_size,):
            raise ValueError(f"action_mask callable returned shape {m.shape}, expected ({self.action_size},)")
        return m

    # -- Gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        prompt = self.resolve_prompt(options)
        ids = self.encode_prompt(prompt)
        n = len(ids)
        self._input_ids.fill(self.pad_token_id)
        self._input_ids[:n] = ids
        self._attention_mask.fill(0)
        self._attention_mask[:n] = 1
        self._prompt, self._prompt_ids, self._length = prompt, ids, n
        self._completion = []
        self._done = False
        info: dict[str, Any] = {"prompt": prompt.text, "prompt_length": n}
        mask = self.action_mask(prompt, self._completion)
        if mask is not None:
            info["action_mask"] = mask
        self._last_info = info
        if self.render_mode == "human":
            self.render()
        return self._obs(), info

    def step(self, action: Any):
        if self._done is None:
            raise ResetNeeded("call reset() before step()")
        if self._done:
            raise ResetNeeded("the episode has ended; call reset() before stepping again")
        a = self.check_action(action)
        self._input_ids[self._length] = a
        self._attention_mask[self._length] = 1
        self._length += 1
        self._completion.append(a)

        if a in self._eos_set:
            end_reason = "eos"
        elif self.stop_strings and self.hits_stop(self._completion):
            end_reason = "stop"
        elif len(self._completion) >= self.max_new_tokens:
            end_reason = "budget"
        else:
            end_reason = None
        done = end_reason is not None
        self._done = done

        reward = 0.0
        info: dict[str, Any] = {}
        if self.reward_mode == "token":
            sample = self._sample(self._prompt, self._prompt_ids, tuple(self._completion), finished=done)
            reward = float(score_tokens_batch(self.scorer, [sample])[0][-1])
        if done:
            sample = self._sample(self._prompt, self._prompt_ids, tuple(self._completion))
            scores, parts, details = score_batch_details(self.scorer, [sample])
            score = float(scores[0])
            if self.reward_mode == "sequence":
                reward = score
            if hasattr(self.prompt_source, "observe"):  # a curriculum widens its prompts on the results
                self.prompt_source.observe([sample], parts)
            info = {"prompt": sample.prompt, "completion": sample.completion, "score": score,
                    "score_parts": {k: float(v[0]) for k, v in parts.items()}, "end_reason": end_reason,
                    "completion_length": len(self._completion), **details[0]}
        if self._action_mask_fn is not None and not done:
            info["action_mask"] = self.action_mask(self._prompt, self._completion)
        self._last_info = info
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, done, False, info

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi', 'human' or 'rgb_array'")
            return None
        prompt = None if self._prompt is None else self._prompt.text
        completion = self.tokenizer.decode(self._completion) if self._prompt is not None else ""
        status = (f"[{self._last_info.get('end_reason')}, score={self._last_info.get('score', 0):.3f}]"
                  if self._done else "")
        if self.render_mode == "rgb_array":
            return text_frame(prompt, completion, status)
        text = ansi_text(prompt, completion, status)
        if self.render_mode == "ansi":
            return text
        print(text)
        return None

    # -- read-only views --------------------------------------------------------------------------------
    @property
    def prompt(self) -> Prompt | None:
        return self._prompt

    @property
    def completion_ids(self) -> tuple[int, ...]:
        return tuple(self._completion)
