"""BatchedTextGenEnv: N prefixes stepped as numpy arrays, one scorer call per step.

Gymnasium's ``SyncVectorEnv`` over :class:`~textgym.envs.text_gen.TextGenEnv` steps N Python objects one
by one and calls the scorer once per finished episode. This env holds the N prefixes as ``(N, L)`` arrays,
writes the N actions with one fancy-indexing assignment, and calls the scorer once per step for all the
episodes that ended in it (and, in ``reward_mode="token"``, once per step for all active episodes). The
prompts, ids, samples, action checks and stop strings come from one inner :class:`TextGenEnv`, so the
two envs cannot drift apart: with the same seeds and actions they return the same observations, rewards,
terminations and infos (``tests/envs/test_vector.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from textgym.core import Prompt, Sample
from textgym.envs.render import ansi_text, text_frame
from textgym.envs.text_gen import TextGenEnv
from textgym.scorers import score_batch_details, score_tokens_batch

AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)
# Gymnasium's enum values are "NextStep"/"Disabled"; we also accept the snake_case names
_AUTORESET_NAMES = {"next_step": AutoresetMode.NEXT_STEP, "disabled": AutoresetMode.DISABLED,
                    "NextStep": AutoresetMode.NEXT_STEP, "Disabled": AutoresetMode.DISABLED}


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _shared(name: str, doc: str) -> property:
    """A read-only attribute of the inner :class:`TextGenEnv` (the config the N envs share)."""
    return property(lambda self: getattr(self._env, name), doc=doc)


class BatchedTextGenEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of :class:`TextGenEnv` as one vector env whose state is a pair of ``(N, L)`` arrays.

    ## Spaces

    ``single_observation_space`` and ``single_action_space`` are the :class:`TextGenEnv`'s;
    ``observation_space`` is ``Dict(input_ids=Box((N, L)), attention_mask=Box((N, L)))`` (int64) and
    ``action_space`` is ``MultiDiscrete([action_size] * N)``, as for ``SyncVectorEnv``.

    ## Autoreset

    - ``"next_step"`` (Gymnasium 1.x's default, as ``SyncVectorEnv``): the step after an env's episode ends
      resets that env; its action is ignored, its reward is 0 and its info is the reset info.
    - ``"disabled"``: a finished env ignores further actions (reward 0, ``terminated`` stays True, observation
      unchanged) until ``reset()`` (all envs, or those in ``options["reset_mask"]``). An RLHF rollout resets
      all, then steps until ``.done.all()``.

    ## Reset options

    ``"prompts"``: a list of N prompts (str, :class:`~textgym.core.Prompt`, dict with ``"prompt"``, or an
    index into the prompt set); ``"prompt"``: one prompt for every env; ``"reset_mask"``: a bool array (N,)
    of the envs to reset (the others keep their state; their entries in ``"prompts"`` are ignored).

    ## Randomness

    One generator per sub-env: ``reset(seed=s)`` seeds env i with ``s + i`` (a list gives one seed per env),
    exactly as ``SyncVectorEnv`` seeds its sub-envs, so both draw the same prompts.

    ## Read-only views

    ``prompt_lengths`` (N,), ``lengths`` (N,) prefix lengths, ``done`` (N,) bool, ``scores`` (N,) float64 (NaN
    until the episode ends), ``input_ids``/``attention_mask`` (N, L). The config shared by the N envs reads as
    on :class:`TextGenEnv`: ``tokenizer``, ``scorer``, ``prompt_source``, ``reward_mode``, ``stop_strings``,
    ``max_new_tokens``, ``max_prompt_tokens``, ``max_length``, ``vocab_size``, ``action_size``,
    ``eos_token_id``, ``pad_token_id``, and ``make_sample(...)`` builds a scorer's sample.

    Infos follow Gymnasium's vector convention (arrays plus ``"_key"`` masks); at an episode's end they carry
    ``prompt``, ``completion``, ``score``, ``score_parts``, ``end_reason`` and ``completion_length``.
    """

    def __init__(self, num_envs: int, *, autoreset_mode: str | AutoresetMode = "next_step",
                 **env_kwargs: Any) -> None:
        self._setup(TextGenEnv(**env_kwargs), num_envs, autoreset_mode)

    @classmethod
    def from_env(cls, env: gym.Env, num_envs: int, *,
                 autoreset_mode: str | AutoresetMode = "next_step") -> BatchedTextGenEnv:
        """A batched env that shares ``env``'s tokenizer, prompts, scorer and config (``env`` may be wrapped,
        e.g. from ``gym.make``; wrappers are not applied to the batched env)."""
        base = env.unwrapped
        if not isinstance(base, TextGenEnv):
            raise TypeError(f"from_env needs a TextGenEnv (possibly wrapped), got {type(base).__name__}")
        self = cls.__new__(cls)
        self._setup(base, num_envs, autoreset_mode)
        return self

    @classmethod
    def from_id(cls, env_id: str, num_envs: int, *, autoreset_mode: str | AutoresetMode = "next_step",
                **overrides: Any) -> BatchedTextGenEnv:
        """A batched env for a registered textgym id (``"TextGen-Copy-v0"``); ``overrides`` replace its kwargs."""
        from textgym.registration import TASKS

        if env_id.startswith("textgym:"):
            env_id = env_id[len("textgym:"):]
        if env_id not in TASKS:
            raise ValueError(f"unknown textgym env id {env_id!r}; registered: {', '.join(TASKS)}")
        return cls(num_envs, autoreset_mode=autoreset_mode, **{**TASKS[env_id][1], **overrides})

    def _setup(self, env: TextGenEnv, num_envs: int, autoreset_mode: str | AutoresetMode) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        mode = _AUTORESET_NAMES.get(autoreset_mode, autoreset_mode)
        if mode not in AUTORESET_MODES:
            raise ValueError(f"autoreset_mode must be 'next_step' or 'disabled', got {autoreset_mode!r} "
                             "('same_step' is not supported: use 'next_step')")
        self._env = env
        self.num_envs = N = int(num_envs)
        self.autoreset_mode = mode
        self.metadata = {**env.metadata, "autoreset_mode": mode}
        self.render_mode = env.render_mode
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = batch_space(env.observation_space, N)
        self.action_space = batch_space(env.action_space, N)

        L = env.max_length
        # ids and mask in one (2, N, L) array: an observation is one copy of it
        self._state = np.zeros((2, N, L), dtype=np.int64)
        self._state[0] = env.pad_token_id
        self._prompt_lengths = np.zeros(N, dtype=np.int64)
        self._lengths = np.zeros(N, dtype=np.int64)
        self._done = np.zeros(N, dtype=bool)
        self._end_at = np.zeros(N, dtype=np.int64)  # prefix length at which the budget ends the episode
        self._scores = np.full(N, np.nan)
        self._autoreset = np.zeros(N, dtype=bool)  # next_step mode: envs that reset at the next step
        self._prompts: list[Prompt | None] = [None] * N
        self._prompt_ids: list[tuple[int, ...]] = [()] * N
        self._rngs: list[np.random.Generator | None] = [None] * N
        self._was_reset = False
        self._rows = np.arange(N)
        self._row_starts = self._rows * L  # offsets of the rows in the flat views
        self._positions = np.arange(L)
        self._padded: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}  # prompt text -> (ids, (L,) padded row)
        # per-step constants as (N,) arrays: numpy's array-array ops cost a fraction of array-scalar ones here
        self._ones = np.ones(N, dtype=np.int64)
        # is_eos[token] for every valid id: indexing it with the (checked) actions finds the EOS ones
        self._is_eos = np.zeros(env.vocab_size, dtype=bool)
        self._is_eos[list(env.eos_token_ids)] = True
        self._any_done = False  # is any env done? (kept in step/reset; saves a count on the hot path)
        self._make_views()

    def _make_views(self) -> None:
        """Views of the state arrays: read-only ones for users, flat ones for the step (rebuilt after unpickling,
        which would otherwise turn views into copies)."""
        self._input_ids, self._attention_mask = self._state[0], self._state[1]  # (N, L) each
        self._views = {k: _read_only(getattr(self, "_" + k)) for k in
                       ("input_ids", "attention_mask", "prompt_lengths", "lengths", "done", "scores")}
        self._flat_ids, self._flat_mask = self._input_ids.reshape(-1), self._attention_mask.reshape(-1)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_views", "_flat_ids", "_flat_mask", "_input_ids", "_attention_mask")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._make_views()

    # -- the shared config (the inner TextGenEnv's) ---------------------------------------------------
    tokenizer = _shared("tokenizer", "the :class:`~textgym.tokenizers.Tokenizer` (encode, decode, token_text)")
    scorer = _shared("scorer", "the scorer that judges finished (and, in token mode, partial) samples")
    prompt_source = _shared("prompt_source", "where the prompts are drawn from (a PromptSource)")
    reward_mode = _shared("reward_mode", '``"sequence"`` or ``"token"``')
    stop_strings = _shared("stop_strings", "strings that end an episode when the completion contains one")
    max_new_tokens = _shared("max_new_tokens", "the completion budget in tokens")
    max_prompt_tokens = _shared("max_prompt_tokens", "the longest prompt in tokens")
    max_length = _shared("max_length", "``L = max_prompt_tokens + max_new_tokens``, the observation width")
    vocab_size = _shared("vocab_size", "the tokenizer's vocabulary size: valid actions are ``0..vocab_size-1``")
    action_size = _shared("action_size", "the size of each env's action space (>= vocab_size)")
    eos_token_id = _shared("eos_token_id", "the tokenizer's EOS id (the first of ``eos_token_ids``)")
    eos_token_ids = _shared("eos_token_ids", "every id that ends an episode (EOS and the generation config's)")
    chat_template = _shared("chat_template", "whether prompts are wrapped in the tokenizer's chat template")
    pad_token_id = _shared("pad_token_id", "the id that pads ``input_ids`` past each prefix")

    def make_sample(self, prompt: Prompt, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                    finished: bool = True) -> Sample:
        """A scorer's sample, as the env builds it (:meth:`TextGenEnv.make_sample`)."""
        return self._env.make_sample(prompt, prompt_ids, completion_ids, finished)

    def encode_prompt(self, prompt: Prompt) -> tuple[int, ...]:
        """A prompt's ids, as the env encodes them (:meth:`TextGenEnv.encode_prompt`: chat template, BOS, budget)."""
        return self._env.encode_prompt(prompt)

    # -- read-only views ------------------------------------------------------------------------------
    @property
    def prompt_lengths(self) -> np.ndarray:
        return self._views["prompt_lengths"]

    @property
    def lengths(self) -> np.ndarray:
        return self._views["lengths"]

    @property
    def done(self) -> np.ndarray:
        return self._views["done"]

    @property
    def scores(self) -> np.ndarray:
        return self._views["scores"]

    @property
    def input_ids(self) -> np.ndarray:
        return self._views["input_ids"]

    @property
    def attention_mask(self) -> np.ndarray:
        return self._views["attention_mask"]

    @property
    def prompts(self) -> list[Prompt | None]:
        return list(self._prompts)

    def completion_ids(self, i: int) -> tuple[int, ...]:
        """The completion of env ``i`` so far."""
        return tuple(self._completion(i))

    # -- Gymnasium API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        N = self.num_envs
        options = dict(options or {})
        if seed is None:
            seeds: Sequence[int | None] = [None] * N
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(N)]
        else:
            seeds = list(seed)
            if len(seeds) != N:
                raise ValueError(f"a list of seeds must have num_envs={N} entries, got {len(seeds)}")

        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(N, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (N,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({N},), "
                                 f"got {mask.dtype} {mask.shape}")
            if not mask.any():
                raise ValueError("options['reset_mask'] selects no env; set at least one entry to True")
        if not self._was_reset and not mask.all():
            raise ResetNeeded("the first reset() must reset every env; drop options['reset_mask']")
        prompts = options.pop("prompts", None)
        if prompts is not None and (isinstance(prompts, (str, dict)) or len(prompts) != N):
            raise ValueError(f"options['prompts'] must be a list of num_envs={N} prompts; for one prompt in "
                             "every env use options['prompt']")

        infos: dict[str, Any] = {}
        idx = np.flatnonzero(mask)
        for i in idx:
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        self._reset_envs(idx, options, prompts, infos)
        self._was_reset = True
        return self._obs(), infos

    def _reset_envs(self, idx: np.ndarray, options: dict[str, Any] | None, prompts: Sequence[Any] | None,
                    infos: dict[str, Any]) -> None:
        """Reset the envs ``idx`` (prompt ``prompts[i]`` if given, else drawn with env i's generator); the reset
        infos go into ``infos``."""
        env = self._env
        texts, lengths, masks, rows = [], [], [], []
        prompts_, prompt_ids_, rngs = self._prompts, self._prompt_ids, self._rngs
        draw = prompts is None and not (options and "prompt" in options)  # the usual case: draw from the set
        source, padded = env.prompt_source, self._padded
        for i in idx.tolist():
            if draw:
                prompt = source.sample(rngs[i])  # what resolve_prompt does here, minus its option checks
            else:
                opts = {**options, "prompt": prompts[i]} if prompts is not None else options
                prompt = env.resolve_prompt(opts, rngs[i])
            hit = padded.get(prompt.text)
            if hit is None:  # the prompt's ids, and its row padded to L; cached (prompt sets repeat)
                ids = env.encode_prompt(prompt)
                row = np.full(env.max_length, env.pad_token_id, dtype=np.int64)
                row[: len(ids)] = ids
                hit = (ids, row)
                if len(padded) < 10_000:
                    padded[prompt.text] = hit
            ids, row = hit
            rows.append(row)
            prompts_[i], prompt_ids_[i] = prompt, ids
            texts.append(prompt.text)
            lengths.append(len(ids))
            if env._action_mask_fn is not None:
                masks.append(env.action_mask(prompt, ()))
        n = np.array(lengths, dtype=np.int64)
        self._input_ids[idx] = rows  # (n, L)
        self._attention_mask[idx] = self._positions < n[:, None]  # (n, L)
        self._prompt_lengths[idx] = self._lengths[idx] = n
        self._end_at[idx] = n + env.max_new_tokens
        self._done[idx] = self._autoreset[idx] = False
        self._any_done = bool(np.count_nonzero(self._done))
        self._scores[idx] = np.nan
        # the same infos as SyncVectorEnv gathers from TextGenEnv.reset: {"prompt", "prompt_length"[, "action_mask"]}
        self._put_info(infos, "prompt", idx, texts, object)
        self._put_info(infos, "prompt_length", idx, lengths, np.int64)
        if masks:
            self._put_info(infos, "action_mask", idx, masks, np.int8)

    def _put_info(self, infos: dict[str, Any], key: str, idx: np.ndarray, values: Any, dtype: Any) -> None:
        """Gymnasium's vector-info convention (``VectorEnv._add_info``) for several envs at once: ``infos[key]``
        is an array over envs, ``infos["_" + key]`` the mask of envs that set it."""
        arr = infos.get(key)
        if arr is None:
            if dtype is object:
                arr = np.empty(self.num_envs, dtype=object)  # all None
            else:
                values = np.asarray(values, dtype=dtype)
                arr = np.zeros((self.num_envs, *values.shape[1:]), dtype=dtype)
            infos[key], infos["_" + key] = arr, np.zeros(self.num_envs, dtype=bool)
        if dtype is object:
            for i, v in zip(idx.tolist(), values):
                arr[i] = v
        else:
            arr[idx] = values
        infos["_" + key][idx] = True

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._was_reset:
            raise ResetNeeded("call reset() before step()")
        env, N = self._env, self.num_envs
        rewards = np.zeros(N)
        infos: dict[str, Any] = {}

        # the envs that step now: all but the finished ones (disabled mode) and those that reset (next_step mode)
        if self._any_done:
            resetting = np.flatnonzero(self._autoreset)
            if resetting.size:
                self._reset_envs(resetting, None, None, infos)
            active = ~self._done
            active[resetting] = False
            idx = np.flatnonzero(active)
            if idx.size == 0:
                return self._obs(), rewards, self._done.copy(), np.zeros(N, dtype=bool), infos
        else:
            idx = self._rows
        a = self._check_actions(actions, idx)  # (n,) int64, every id a valid token
        eos = self._is_eos[a]  # (n,)

        # append the tokens: one fancy-indexed write for all active envs
        # (through flat views: 1-D fancy indexing costs a fraction of 2-D fancy indexing at these sizes)
        if idx is self._rows:  # all envs step: no gathers
            pos, end_at = self._lengths, self._end_at
            flat = self._row_starts + pos
            self._flat_ids[flat] = a
            self._flat_mask[flat] = self._ones
            pos += self._ones
        else:
            pos, end_at = self._lengths[idx], self._end_at[idx]
            flat = idx * env.max_length + pos
            self._flat_ids[flat] = a
            self._flat_mask[flat] = 1
            pos += 1
            self._lengths[idx] = pos

        # episode end: EOS, a stop string, the budget (reasons in the order of TextGenEnv.step)
        ended = pos >= end_at
        ended |= eos
        if env.stop_strings:
            stop = np.array([not e and env.hits_stop(self._completion(i)) for i, e in zip(idx, eos)], dtype=bool)
            ended |= stop
        any_ended = np.count_nonzero(ended) > 0

        if env.reward_mode == "token":
            samples = self._samples(idx, pos, ended.tolist())
            rewards[idx] = [r[-1] for r in score_tokens_batch(env.scorer, samples)]
        if any_ended:
            stopped = stop[ended].tolist() if env.stop_strings else None
            self._end_episodes(idx[ended], pos[ended], eos[ended].tolist(), stopped, rewards, infos)
        if env._action_mask_fn is not None:
            going = idx[~ended]
            if going.size:
                self._put_info(infos, "action_mask", going,
                               [env.action_mask(self._prompts[i], self._completion(i)) for i in going], np.int8)
        if any_ended and self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset[:] = self._done
        if self.render_mode == "human":
            self.render()
        return self._obs(), rewards, self._done.copy(), np.zeros(N, dtype=bool), infos

    def _end_episodes(self, fin: np.ndarray, ends: np.ndarray, eos: list[bool], stopped: list[bool] | None,
                      rewards: np.ndarray, infos: dict[str, Any]) -> None:
        """The episodes of envs ``fin`` ended at prefix lengths ``ends`` (by EOS, a stop string or the budget):
        score them in one scorer call, pay the score in sequence mode, and put TextGenEnv.step's end infos."""
        env, N = self._env, self.num_envs
        self._done[fin] = True
        self._any_done = True
        samples = self._samples(fin, ends)
        scores, parts, details = score_batch_details(env.scorer, samples)
        if hasattr(env.prompt_source, "observe"):  # a curriculum widens its prompts on the results
            env.prompt_source.observe(samples, parts)
        self._scores[fin] = scores
        if env.reward_mode == "sequence":
            rewards[fin] = scores
        why = ["eos" if e else "stop" if st else "budget" for e, st in zip(eos, stopped or [False] * len(eos))]
        self._put_info(infos, "prompt", fin, [x.prompt for x in samples], object)
        self._put_info(infos, "completion", fin, [x.completion for x in samples], object)
        self._put_info(infos, "score", fin, scores, np.float64)
        sub: dict[str, Any] = infos.setdefault("score_parts", {})
        for name, v in parts.items():
            self._put_info(sub, name, fin, np.asarray(v, dtype=np.float64), np.float64)
        infos["_score_parts"] = infos.get("_score_parts", np.zeros(N, dtype=bool))
        infos["_score_parts"][fin] = True
        self._put_info(infos, "end_reason", fin, why, object)
        self._put_info(infos, "completion_length", fin, [len(x.completion_ids) for x in samples], np.int64)
        for key in sorted({k for d in details for k in d}):  # the scorer's extra infos (sql_error)
            has = np.array([key in d for d in details])
            self._put_info(infos, key, fin[has], [d[key] for d in details if key in d], object)

    def _samples(self, idx: np.ndarray, ends: np.ndarray, finished: list[bool] | None = None) -> list[Sample]:
        """The scorer's samples of envs ``idx`` whose prefixes end at ``ends``: the completions from one gather +
        ``tolist`` (not one slice per env); ``finished`` per env (default: all finished)."""
        env, prompts, prompt_ids = self._env, self._prompts, self._prompt_ids
        rows, starts = self._input_ids[idx].tolist(), self._prompt_lengths[idx].tolist()
        done = finished if finished is not None else [True] * len(rows)
        return [env._sample(prompts[i], prompt_ids[i], tuple(row[p:e]), f)
                for i, row, p, e, f in zip(idx.tolist(), rows, starts, ends.tolist(), done)]

    def _completion(self, i: int) -> list[int]:
        return self._input_ids[i, self._prompt_lengths[i]:self._lengths[i]].tolist()

    def _check_actions(self, actions: Any, idx: np.ndarray) -> np.ndarray:
        """The actions of the envs ``idx`` as int64, or a ValueError naming the first bad one."""
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), one token id per env; got {a.shape}")
        if a.dtype.kind not in "iu":
            for i in idx:
                try:
                    self._env.check_action(a[i].item() if a.dtype.kind != "O" else a[i])
                except ValueError as e:
                    raise ValueError(f"actions[{i}]: {e}") from None
            raise ValueError(f"actions must be integer token ids, got dtype {a.dtype}")
        a = (a if idx is self._rows else a[idx]).astype(np.int64)  # a copy: the caller may reuse theirs
        bad = (a < 0) | (a >= self._env.vocab_size)
        if np.count_nonzero(bad):  # (count_nonzero costs a fraction of bad.any() on small arrays)
            j = int(np.flatnonzero(bad)[0])
            try:
                self._env.check_action(int(a[j]))
            except ValueError as e:
                raise ValueError(f"actions[{idx[j]}]: {e}") from None
        return a

    def _obs(self) -> dict[str, np.ndarray]:
        state = self._state.copy()  # one copy of ids + mask; the two arrays do not overlap
        return {"input_ids": state[0], "attention_mask": state[1]}

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """``"ansi"``: one line per env (prompt│completion); ``"rgb_array"``: one ``(H, W, 3)`` image per env (as
        ``SyncVectorEnv`` gives); ``"human"``: prints the lines."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi', 'human' or 'rgb_array'")
            return None
        parts = [(None, "", "") if p is None else  # (prompt, completion, status) per env
                 (p.text, self._env.tokenizer.decode(self.completion_ids(i)),
                  f"[score={self._scores[i]:.3f}]" if self._done[i] else "")
                 for i, p in enumerate(self._prompts)]
        if self.render_mode == "rgb_array":
            return tuple(text_frame(*part) for part in parts)
        lines = tuple(ansi_text(*part) for part in parts)
        if self.render_mode == "ansi":
            return lines
        print("\n".join(f"[{i}] {t}" for i, t in enumerate(lines)))
        return None

    def close_extras(self, **kwargs: Any) -> None:
        self._env.close()
