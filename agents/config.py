"""Command lines generated from dataclasses: one field, one flag, the field's docstring as its help.

A field's doc is the string literal right after it (as in CleanRL's ``Args``); :func:`field_docs` reads
those from the source. A field whose type admits a ``dict`` (``str | dict | None``) takes a JSON object on the
command line (``--scorer '{"name": "length", "target": 8}'``); other text stays a string.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from typing import Any, TypeVar

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
    """Build ``cls`` from the flags added by :func:`add_dataclass_args`; flags not given keep defaults."""
    hints = typing.get_type_hints(cls)
    values = vars(args)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        dest = f"{prefix}{f.name}".replace(".", "__")
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = dataclass_from_args(tp, args, prefix=f"{prefix}{f.name}.")
        elif dest in values:
            v = values[dest]
            kwargs[f.name] = tuple(v) if typing.get_origin(tp) is tuple else v
    kwargs.update(overrides)
    return cls(**kwargs)
