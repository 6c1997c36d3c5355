"""Issue 13, item 2: what two private fast paths of the envs buy end to end on ``benchmarks/env_step.py``.

- **uint64 range check** (``BatchedTextGenEnv.step``): the actions viewed as uint64 index ``is_eos``, so one
  lookup would both find EOS and range-check them (a negative id wrapping to a huge one: IndexError), instead
  of comparing ``(a < 0) | (a >= vocab_size)`` (``_check_actions``, the plain way). With numpy 2 it is also
  wrong: a uint64 index is cast back to intp, so -1 indexes the last entry and is accepted
  (``tests/envs/test_vector.py::test_every_bad_action_id_is_refused_in_every_dtype_and_subset``).
- **Sample._trusted** (``TextGenEnv._sample``): samples built with ``object.__new__`` + ``__dict__.update``,
  bypassing the frozen dataclass's ``__init__`` (which sets each field through ``object.__setattr__``).

Each was to be kept only if worth >= 10% end to end. The library now does both the plain way. This script puts
each fast path back as a patch and measures env_step.py's two figures (``TextGenEnv.step`` µs/step and
``BatchedTextGenEnv(16)`` steps/s) under each variant, in many short trials with the variants interleaved,
best of each, in process CPU time. Ratios are the variant's speed over the library's (> 1: the fast path is
faster); a second copy of the library ("library again") shows the noise.

    python benchmarks/env_internals.py        # writes benchmarks/results/env_internals.json
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import platform
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # env_step.py beside this file
from env_step import ALPHABET, env_kwargs  # noqa: E402

from textgym.core import Sample  # noqa: E402
from textgym.envs.text_gen import TextGenEnv  # noqa: E402
from textgym.envs.vector import BatchedTextGenEnv  # noqa: E402


def _step_uint64() -> Any:
    """``BatchedTextGenEnv.step`` with the uint64-view check as it was (the library's source, the two lines of the
    plain check replaced by the old block, compiled in the library's module). For timing only: on numpy 2 it lets
    negative ids through."""
    import textgym.envs.vector as vector

    src = textwrap.dedent(inspect.getsource(BatchedTextGenEnv.step))
    plain = ("    a = self._check_actions(actions, idx)  # (n,) int64, every id a valid token\n"
             "    eos = self._is_eos[a]  # (n,)\n")
    fast = ("    a = np.asarray(actions)\n"
            "    if a.dtype.kind in 'iu' and a.shape == (N,):\n"
            "        a = (a if idx is self._rows else a[idx]).astype(np.int64)\n"
            "    else:\n"
            "        a = self._check_actions(actions, idx)\n"
            "    try:\n"
            "        eos = self._is_eos[a.view(np.uint64)]\n"
            "    except IndexError:\n"
            "        self._check_actions(actions, idx)\n"
            "        raise\n")
    if plain not in src:
        raise RuntimeError("BatchedTextGenEnv.step no longer holds the plain check this benchmark replaces")
    namespace: dict[str, Any] = {}
    exec(compile(src.replace(plain, fast), vector.__file__, "exec"), vars(vector), namespace)
    return namespace["step"]


def _sample_trusted(self: TextGenEnv, prompt: Any, prompt_ids: tuple[int, ...], ids: tuple[int, ...],
                    finished: bool = True) -> Sample:
    """The fast constructor as it was: every field set at once, past the frozen dataclass's ``__init__``."""
    s = object.__new__(Sample)
    s.__dict__.update(prompt=prompt.text, completion=self.tokenizer.decode(ids), prompt_ids=prompt_ids,
                      completion_ids=ids, tokens=tuple(map(self._token_texts.__getitem__, ids)), meta=prompt.meta,
                      finished=finished)
    return s


LIBRARY = "library"
PATCHES = {LIBRARY: {}, "library again (noise)": {},
           "uint64 range check": {(BatchedTextGenEnv, "step"): _step_uint64()},
           "Sample._trusted": {(TextGenEnv, "_sample"): _sample_trusted}}


@contextlib.contextmanager
def patched(patches: dict[tuple[type, str], Any]):
    old = {key: getattr(*key) for key in patches}
    for (cls, name), f in patches.items():
        setattr(cls, name, f)
    try:
        yield
    finally:
        for (cls, name), f in old.items():
            setattr(cls, name, f)


def check_equal() -> None:
    """Each patch gives the same observations, rewards and infos as the library (bit-exact)."""
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 28, size=(200, 8))  # 27 letters + EOS
    runs = {}
    for name, patches in PATCHES.items():
        with patched(patches):
            env = BatchedTextGenEnv(8, **env_kwargs(6))
            obs, _ = env.reset(seed=0)
            out = [obs["input_ids"].copy()]
            for a in actions:
                obs, r, term, _, info = env.step(a)
                out += [obs["input_ids"].copy(), r.copy(), term.copy(), repr(sorted(info.items(), key=str))]
        runs[name] = out
    base = runs[LIBRARY]
    for name, out in runs.items():
        assert all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(base, out)), name


def _time_single(n_steps: int) -> float:
    """µs per ``TextGenEnv.step`` (env_step.py's measure (a): episodes end by the budget, resets included)."""
    env = TextGenEnv(**env_kwargs(24))
    actions = np.random.default_rng(0).integers(0, len(ALPHABET), size=n_steps).tolist()
    env.reset(seed=0)
    step, reset = env.step, env.reset
    t0 = time.process_time()
    for a in actions:
        if step(a)[2]:
            reset()
    return 1e6 * (time.process_time() - t0) / n_steps


def _time_batched(num_envs: int, n_steps: int) -> float:
    """Sub-env steps/s of ``BatchedTextGenEnv(num_envs)`` (env_step.py's measure (b), batched side)."""
    env = BatchedTextGenEnv(num_envs, **env_kwargs(24))
    actions = np.random.default_rng(0).integers(0, len(ALPHABET), size=(n_steps, num_envs))
    env.reset(seed=0)
    t0 = time.process_time()
    for a in actions:
        env.step(a)
    return n_steps * num_envs / (time.process_time() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/env_internals.json")
    p.add_argument("--rounds", type=int, default=40, help="rounds; each runs every variant once, in rotated order")
    args = p.parse_args(argv)
    check_equal()
    names = list(PATCHES)
    best: dict[str, dict[str, float]] = {name: {"us_per_step": float("inf"), "batched_steps_per_s": 0.0}
                                         for name in names}
    # many short trials, the variants interleaved and the order rotated, best of each, timed in CPU time of this
    # process (time.process_time): on a shared, overloaded machine wall time mostly measures the others' load.
    # "library again" is the library a second time: its ratio to "library" is the noise of the measurement.
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            with patched(PATCHES[name]):
                b = best[name]
                b["us_per_step"] = min(b["us_per_step"], _time_single(20_000))
                b["batched_steps_per_s"] = max(b["batched_steps_per_s"], _time_batched(16, 1_000))
    lib = best[LIBRARY]
    # each variant's speed over the library's: > 1 means the fast path is faster
    result = {"variants": {name: {**b, "gain_single": lib["us_per_step"] / b["us_per_step"],
                                  "gain_batched": b["batched_steps_per_s"] / lib["batched_steps_per_s"]}
                           for name, b in best.items()},
              "threshold": 1.10, "rounds": args.rounds, "python": platform.python_version(),
              "numpy": np.__version__, "machine": platform.machine()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'variant':<22} {'single µs/step':>15} {'x library':>10} {'batched steps/s':>16} {'x library':>10}")
    for name, v in result["variants"].items():
        print(f"{name:<22} {v['us_per_step']:>15.2f} {v['gain_single']:>10.3f} "
              f"{v['batched_steps_per_s']:>16,.0f} {v['gain_batched']:>10.3f}")
    print(f"(written to {out})")
    return result


if __name__ == "__main__":
    main()
