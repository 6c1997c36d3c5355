"""Tests for textgym/prompts.py: prompt files, built-in sets, load_prompts specs and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textgym.core import Prompt
from textgym.prompts import PromptSet, builtin_prompt_names, builtin_prompts, load_prompts, read_prompt_file


def test_txt_file_one_prompt_per_non_empty_line(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("The movie was\n\n  \nI watched\n", encoding="utf-8")
    s = load_prompts(str(p))
    assert [x.text for x in s] == ["The movie was", "I watched"]


def test_jsonl_objects_strings_and_meta(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a", "target": "b"}\n"plain"\n\n{"prompt": "c", "meta": {"answer": 3}}\n')
    s = read_prompt_file(p)
    assert [x.text for x in s] == ["a", "plain", "c"]
    assert s[0].meta == {"target": "b"} and s[2].meta == {"answer": 3}


def test_json_list(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(["x", {"prompt": "y", "reference": "z"}]))
    s = load_prompts(p)
    assert len(s) == 2 and s[1] == Prompt("y", {"reference": "z"})


def test_malformed_jsonl_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON line"):
        read_prompt_file(p)
    p.write_text('{"prompt": "ok"}\n\n{"text": "no prompt key"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: a prompt object needs a string field 'prompt'"):
        read_prompt_file(p)


def test_unreadable_missing_and_empty_files(tmp_path):
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot read prompt file .* as UTF-8"):
        read_prompt_file(binary)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="is not a file"):
        read_prompt_file(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="is empty; give at least one prompt"):
        read_prompt_file(empty)
    other = tmp_path / "p.csv"
    other.write_text("a")
    with pytest.raises(ValueError, match="unknown format '.csv'"):
        read_prompt_file(other)
    bad_json = tmp_path / "d.json"
    bad_json.write_text('{"prompt": "x"}')
    with pytest.raises(ValueError, match="must hold a list"):
        read_prompt_file(bad_json)


def test_empty_set_and_bad_specs():
    with pytest.raises(ValueError, match="empty"):
        load_prompts([])
    with pytest.raises(TypeError, match="cannot make prompts from int"):
        load_prompts(3)
    with pytest.raises(ValueError, match="unknown built-in prompt set 'nope'; available"):
        load_prompts("builtin:nope")
    with pytest.raises(ValueError, match="unknown prompt generator 'nope'; available"):
        load_prompts("gen:nope")
    with pytest.raises(ValueError, match="only apply to generated prompts"):
        load_prompts(["a"], n=3)


def test_builtin_sets():
    assert {"sentiment", "chat"} <= set(builtin_prompt_names())
    s = load_prompts("builtin:sentiment")
    assert s.name == "builtin:sentiment" and 60 <= len(s) <= 100
    texts = [p.text for p in s]
    assert len(set(texts)) == len(texts) and all(t and t == t.strip() for t in texts)
    assert len(builtin_prompts("chat")) >= 20


def test_prompt_set_sampling_is_deterministic_given_the_rng():
    s = PromptSet(["a", "b", "c", "d"])
    draw = [s.sample(np.random.default_rng(7)).text for _ in range(3)]
    assert len(set(draw)) == 1  # same seed, same prompt
    seen = {s.sample(np.random.default_rng(i)).text for i in range(50)}
    assert seen == {"a", "b", "c", "d"}


# -- the "gen:NAME" registry: lazy "module:attr" entries, as the scorers' ---------------------------------------
def test_importing_textgym_imports_and_registers_no_generator():
    import subprocess
    import sys

    code = ("import sys, textgym, textgym.prompts as p; before = dict(p.PROMPT_GENERATORS); "
            "assert 'textgym.tasks' not in sys.modules, 'import textgym imported the tasks'; "
            "import textgym.tasks; assert p.PROMPT_GENERATORS == before, 'importing textgym.tasks registered'; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_registered_generator_is_a_lazy_string_that_resolves():
    from textgym.prompts import PROMPT_GENERATORS, prompt_generator

    assert all(isinstance(v, str) for v in PROMPT_GENERATORS.values())
    for name in PROMPT_GENERATORS:
        assert callable(prompt_generator(name))


def test_register_prompts_by_module_attr_string():
    from textgym.prompts import PROMPT_GENERATORS, register_prompts

    register_prompts("copy-xy", "textgym.tasks:LettersTask")
    try:
        src = load_prompts("gen:copy-xy", alphabet="xy", min_len=2, max_len=2)
        p = src.sample(np.random.default_rng(0))
        assert len(p.text) == 3 and set(p.text[:2]) <= {"x", "y"} and p.meta["target"] == p.text[:2]
    finally:
        del PROMPT_GENERATORS["copy-xy"]
    with pytest.raises(ValueError, match="without ':'"):
        register_prompts("gen:bad", "textgym.tasks:LettersTask")


def test_unknown_generator_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown prompt generator 'nope'; available: \['copy'"):
        load_prompts("gen:nope")
