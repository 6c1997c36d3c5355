"""Tests for agents/config.py: flags from dataclass fields, JSON objects for dict-typed fields, and --config files
(YAML, TOML, JSON) that flags override."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.config import add_config_arg, add_dataclass_args, dataclass_from_args


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
    rate: float = 0.5
    """a float"""
    sizes: tuple[int, ...] = (1, 2)
    """a tuple"""


def parse(*argv: str) -> Cfg:
    p = argparse.ArgumentParser(prog="t")
    add_dataclass_args(p, Cfg)
    add_config_arg(p, Cfg)
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


# -- --config files ---------------------------------------------------------------------------------------------
YAML = """
name: from-yaml
n: 7
flag: true
spec: {name: length, target: 8}
rate: 2
sizes: [3, 4]
inner:
  k: 9
"""
TOML = """
name = "from-yaml"
n = 7
flag = true
rate = 2
sizes = [3, 4]
spec = {name = "length", target = 8}

[inner]
k = 9
"""
EXPECTED = Cfg(name="from-yaml", n=7, flag=True, spec={"name": "length", "target": 8}, inner=Inner(9), rate=2.0,
               sizes=(3, 4))


@pytest.mark.parametrize("suffix,text", [(".yaml", YAML), (".toml", TOML), (".json", json.dumps(
    dataclasses.asdict(EXPECTED)))])
def test_config_file_sets_fields(tmp_path, suffix, text):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    cfg = parse("--config", str(path))
    assert cfg == EXPECTED and isinstance(cfg.rate, float) and isinstance(cfg.sizes, tuple)


def test_flags_override_the_file_and_the_rest_keeps_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: from-yaml\ninner: {k: 9}\n")
    cfg = parse("--inner.k", "1", "--config", str(path), "--n", "3")  # the flag wins wherever it stands
    assert (cfg.name, cfg.inner.k, cfg.n, cfg.flag, cfg.rate) == ("from-yaml", 1, 3, False, 0.5)
    assert parse("--config", str(path), "--name", "flag").name == "flag"


def test_a_saved_config_json_round_trips(tmp_path):
    cfg = Cfg(name="x", n=None, flag=True, spec="vader", inner=Inner(4), rate=0.25, sizes=())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    assert parse("--config", str(path)) == cfg


@pytest.mark.parametrize("text,message", [
    ("nmae: b\ninner: {kk: 1}\n", r"unknown keys \['nmae'\]; Cfg has name, n, flag"),
    ("inner: {kk: 1}\n", r"unknown keys \['inner\.kk'\]; Inner has inner\.k"),
    ("n: '3'\n", r"run\.yaml: n must be int, got '3'"),
    ("flag: 1\n", r"flag must be bool"),
    ("inner: 3\n", r"inner must be a section"),
    ("name: null\n", r"name must not be null"),
    ("- a\n- b\n", r"must hold a mapping"),
    ("a: [1\n", r"cannot be read"),
])
def test_bad_config_file_is_a_usage_error_naming_the_key(tmp_path, capsys, text, message):
    import re

    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        parse("--config", str(path))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --config" in err and re.search(message, err), err


def test_missing_or_unknown_format_config_file(tmp_path, capsys):
    (tmp_path / "run.ini").write_text("x")
    for path, message in [(tmp_path / "nope.yaml", "does not exist"), (tmp_path / "run.ini", "unknown format")]:
        with pytest.raises(SystemExit):
            parse("--config", str(path))
        assert message in capsys.readouterr().err


def test_train_reads_a_run_folders_config_json_back(tmp_path):
    """`textgym train --config OUT/config.json` rebuilds the run's RLHFConfig exactly; flags still override."""
    pytest.importorskip("torch")
    from agents.cli import build_parser
    from agents.lm.rlhf import RLHFConfig, write_config

    cfg = dataclasses.replace(RLHFConfig(), iterations=3, num_envs=4, scorer={"name": "length", "target": 8},
                              ppo=dataclasses.replace(RLHFConfig().ppo, minibatch_size=2))
    write_config(tmp_path / "config.json", cfg)
    parser = build_parser(only="train")
    assert dataclass_from_args(RLHFConfig, parser.parse_args(["train", "--config", str(tmp_path / "config.json")])) \
        == cfg
    again = dataclass_from_args(RLHFConfig, parser.parse_args(["train", "--config", str(tmp_path / "config.json"),
                                                               "--iterations", "5"]))
    assert again == dataclasses.replace(cfg, iterations=5)
