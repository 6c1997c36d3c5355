"""Tests for agents/config.py: flags from dataclass fields, and JSON objects for dict-typed fields."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.config import add_dataclass_args, dataclass_from_args


@dataclass
class Inner:
    k: int = 2
    """an inner int"""


@dataclass
class Cfg:
    name: str = "a"
    """a string"""
    n: int | None = None
    """an optional int"""
    flag: bool = False
    """a bool"""
    spec: str | dict[str, Any] | None = None
    """a name or a JSON object"""
    inner: Inner = field(default_factory=Inner)
    """nested"""


def parse(*argv: str) -> Cfg:
    p = argparse.ArgumentParser(prog="t")
    add_dataclass_args(p, Cfg)
    return dataclass_from_args(Cfg, p.parse_args(list(argv)))


def test_flags_defaults_and_types():
    assert parse() == Cfg()
    cfg = parse("--name", "b", "--n", "3", "--flag", "yes", "--inner.k", "5")
    assert (cfg.name, cfg.n, cfg.flag, cfg.inner.k) == ("b", 3, True, 5)
    assert parse("--n", "none").n is None


def test_dict_typed_field_takes_a_json_object_or_text():
    assert parse("--spec", "vader").spec == "vader"
    assert parse("--spec", "reward-model:runs/rm").spec == "reward-model:runs/rm"  # text, left to its reader
    assert parse("--spec", ' {"name": "length", "target": 8}').spec == {"name": "length", "target": 8}
    assert parse("--spec", "null").spec is None


@pytest.mark.parametrize("bad", ["{name: length}", "{'name': 'length'}", '{"name": "length"'])
def test_bad_json_object_is_a_usage_error_naming_the_form(bad, capsys):
    with pytest.raises(SystemExit) as e:
        parse("--spec", bad)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --spec" in err and "not valid JSON" in err and '\'{"name": "length", "target": 8}\'' in err
