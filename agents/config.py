"""Command lines generated from dataclasses: one field, one flag, the field's docstring as its help.

A field's doc is the string literal right after it (as in CleanRL's ``Args``); :func:`field_docs` reads
those from the source. A field whose type admits a ``dict`` (``str | dict | None``) takes a JSON object on the
command line (``--scorer '{"name": "length", "target": 8}'``); other text stays a string.

Configuration files (:func:`add_config_arg`): ``--config run.yaml`` (or ``.toml``, ``.json``: a run folder's
``config.json`` too) gives field values, nested dataclasses as nested tables; flags given on the command line
override the file. A key the dataclass lacks, or a value of the wrong type, is a usage error naming it.

Why not tyro, simple-parsing or ``HfArgumentParser``: none reads a config file *and* lets flags override it
without our code around it (tyro takes a ``default=`` you load yourself; ``HfArgumentParser`` parses a file
or flags, needs transformers and has no nested dataclasses; simple-parsing's config files come with its own
flag forms), and each would change the flags users already write (``--flag BOOL``, JSON objects for
dict-typed fields). This module stays small enough to read.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from textgym._optional import require

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` from the string literals that follow each annotated field in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        node = ast.parse(src).body[0]
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, optional?) of a field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(tp))
    return tp, False


def _parse_optional(conv: Any) -> Any:
    def f(s: str) -> Any:
        return None if s.lower() in ("none", "null") else conv(s)

    f.__name__ = getattr(conv, "__name__", "value")
    return f


def _admits_dict(tp: Any) -> bool:
    """Whether a field type is ``dict`` or a union with a ``dict`` in it (``str | dict | None``)."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(a is dict or typing.get_origin(a) is dict for a in args)


def _parse_json_object(s: str) -> Any:
    """A JSON object (``{...}``) becomes a dict; other text stays a string (a name, a path)."""
    if not s.lstrip().startswith("{"):
        return s
    try:
        value = json.loads(s)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"{s!r} is not valid JSON ({e}); write an object with double-quoted keys and strings, in single "
            "quotes for the shell: '{\"name\": \"length\", \"target\": 8}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{s!r} is not a JSON object")
    return value


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                       skip: tuple[str, ...] = ()) -> None:
    """Add ``--field-name`` for each field of dataclass ``cls`` (nested dataclasses become ``--outer.inner``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, optional = _base_type(hints[f.name])
        flag = f"--{prefix}{f.name.replace('_', '-')}"
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(tp):
            add_dataclass_args(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        help_ = docs.get(f.name, "")
        help_ = f"{help_} (default: {default})" if help_ else f"(default: {default})"
        dest = f"{prefix}{f.name}".replace(".", "__")
        if _admits_dict(hints[f.name]):
            conv = _parse_optional(_parse_json_object) if optional else _parse_json_object
            parser.add_argument(flag, type=conv, default=argparse.SUPPRESS, dest=dest, help=help_)
        elif tp is bool:
            parser.add_argument(flag, type=_parse_bool, default=argparse.SUPPRESS, dest=dest, metavar="BOOL",
                                help=help_)
        elif tp in (int, float, str):
            conv = _parse_optional(tp) if optional else tp
            parser.add_argument(flag, type=conv, default=argparse.SUPPRESS, dest=dest, help=help_)
        elif typing.get_origin(tp) in (tuple, list):
            (inner, *_) = typing.get_args(tp) or (str,)
            parser.add_argument(flag, type=inner if inner in (int, float, str) else str, nargs="*",
                                default=argparse.SUPPRESS, dest=dest, help=help_)
        else:
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS, dest=dest, help=help_)


def dataclass_from_args(cls: type[T], args: argparse.Namespace, prefix: str = "", **overrides: Any) -> T:
    """Build ``cls`` from the flags added by :func:`add_dataclass_args`: a flag given wins, then the value from
    ``--config`` (:func:`add_config_arg`), then the field's default."""
    file_values = getattr(args, "config", None) if not prefix else None
    return _build(cls, vars(args), prefix, file_values or {}, overrides)


def _build(cls: type[T], values: dict[str, Any], prefix: str, file_values: dict[str, Any],
           overrides: dict[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        dest = f"{prefix}{f.name}".replace(".", "__")
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, values, f"{prefix}{f.name}.", file_values.get(f.name, {}), {})
        elif dest in values:
            v = values[dest]
            kwargs[f.name] = tuple(v) if typing.get_origin(tp) is tuple else v
        elif f.name in file_values:
            kwargs[f.name] = file_values[f.name]
    kwargs.update(overrides)
    return cls(**kwargs)


# -- configuration files ---------------------------------------------------------------------------------------

def add_config_arg(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config PATH``: field values of ``cls`` from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file,
    checked while the command line is parsed (a bad file is a usage error); flags override it."""
    def load(path: str) -> dict[str, Any]:
        try:
            return check_config(read_config_file(path), cls, where=path)
        except (OSError, ValueError, ImportError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parser.add_argument("--config", type=load, default=None, metavar="PATH",
                        help="a .yaml, .toml or .json file of field values (nested sections for nested settings; "
                             "a run folder's config.json works); flags given on the command line override it")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` (PyYAML), ``.toml`` (``tomllib``; ``tomli`` before Python 3.11) or
    ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise ValueError(f"config file {str(path)!r}: unknown format {suffix!r}; use .yaml, .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = require("tomllib" if sys.version_info >= (3, 11) else "tomli", "TOML config files").loads(text)
        else:
            yaml = require("yaml", "YAML config files")
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(str(e)) from None
    except ValueError as e:  # json's and tomllib's errors and bad UTF-8 are ValueErrors too
        raise ValueError(f"config file {str(path)!r} cannot be read: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of field names to values, "
                         f"got a {type(data).__name__}")
    return data


def check_config(data: dict[str, Any], cls: type, where: str, prefix: str = "") -> dict[str, Any]:
    """``data`` checked against the fields of ``cls``: unknown keys and values of the wrong type are a
    ``ValueError`` naming them (``where``: the file); lists become tuples for tuple fields."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(f"{prefix}{k}" for k in data if k not in fields)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; {cls.__name__} has "
                         f"{', '.join(prefix + k for k in fields)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        tp, optional = _base_type(hints[key])
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {name} must be a section (a mapping) of {tp.__name__}'s fields")
            out[key] = check_config(value, tp, where, prefix=f"{name}.")
        else:
            out[key] = _file_value(hints[key], tp, optional, value, f"{where}: {name}")
    return out


def _file_value(hint: Any, tp: Any, optional: bool, value: Any, what: str) -> Any:
    """A value read from a config file, checked against its field's type (ints are fine for floats)."""
    if value is None:
        if optional:
            return None
        raise ValueError(f"{what} must not be null")
    if _admits_dict(hint):
        ok = isinstance(value, (dict, str))
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif typing.get_origin(tp) in (tuple, list):
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok and typing.get_origin(tp) is tuple else value
    else:
        ok = True
    if not ok:
        name = getattr(tp, "__name__", str(tp))
        raise ValueError(f"{what} must be {'a JSON object or a string' if _admits_dict(hint) else name}, "
                         f"got {value!r}")
    return value
