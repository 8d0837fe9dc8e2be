"""Checked values for the command line and configuration files: one place that says what a number may be.

``argparse`` types (``positive_int``, ``nonnegative_int``, ``positive_float``, ``fraction``, ``port``, ``int_list``)
reject bad values with a message argparse prints as ``fedgin train: error: argument --steps: ...``; ``check_type``
and ``check_range`` do the same for values read from JSON (``--set``, ``--config``, job and datalist files), and
raise :class:`OptionError` naming where the value came from (``--set channels``, ``config.json: batch_size``).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Callable

__all__ = ["OptionError", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "fraction",
           "port", "int_list", "name_list", "bounded_int", "parse_json_value", "check_type", "check_range", "type_name",
           "MAX_SIZE_PX"]

#: the largest in-plane slice size accepted (pixels): 4096² float32 slices are 64 MiB each
MAX_SIZE_PX = 4096


class OptionError(ValueError):
    """A command-line option or configuration value is of the wrong type or out of range (the message names it)."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(parse: Callable[[str], Any], ok: Callable[[Any], bool], rule: str, name: str,
             doc: str) -> Callable[[str], Any]:
    """An argparse type: ``parse(text)``, refused unless ``ok(value)`` with ``"<rule>, got <value>"``."""

    def check(text: str) -> Any:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {value:g}" if isinstance(value, float) else
                                             f"{rule}, got {value}")
        return value

    check.__name__ = check.__qualname__ = name  # argparse names the type in some messages
    check.__doc__ = doc
    return check


positive_int = _checked(_int, lambda v: v >= 1, "must be a positive integer (>= 1)", "positive_int",
                        "An integer >= 1 (counts of steps, rounds, cases, slices per batch).")
nonnegative_int = _checked(_int, lambda v: v >= 0, "must be an integer >= 0", "nonnegative_int", "An integer >= 0.")
positive_float = _checked(_float, lambda v: v > 0, "must be a positive number", "positive_float", "A number > 0.")
nonnegative_float = _checked(_float, lambda v: v >= 0, "must be a number >= 0", "nonnegative_float",
                             "A number >= 0.")
fraction = _checked(_float, lambda v: 0 <= v < 1, "must be a fraction in [0, 1)", "fraction",
                    "A number in ``[0, 1)``.")
port = _checked(_int, lambda v: 1 <= v <= 65535, "must be a TCP port (1-65535)", "port", "A TCP port, 1-65535.")


def bounded_int(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An integer in ``[low, high]``; ``what`` explains the upper bound in the message."""
    return _checked(_int, lambda v: low <= v <= high, f"must be between {low} and {high}{what}", "bounded_int",
                    f"An integer in [{low}, {high}].")


def int_list(text: str) -> list[int]:
    """``16,32,64`` -> ``[16, 32, 64]``; every entry a positive integer."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return [positive_int(p) for p in parts]


def seed_list(text: str) -> list[int]:
    """``0,1,2`` -> ``[0, 1, 2]``: distinct integers >= 0 (training seeds of a grid)."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    seeds = [nonnegative_int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return seeds


def name_list(text: str, option: str) -> list[str]:
    """A comma-separated list of names (``liver,spleen``); none at all is an error (a run over nothing does no work).

    Raises:
        OptionError: ``<option>: give at least one name, got ','``.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise OptionError(f"{option}: give at least one name, got {text!r}")
    return names


def parse_json_value(option: str, key: str, raw: str, template: Any = None) -> Any:
    """The value of ``--set KEY=VALUE``: JSON, or a bare word when the variable holds text.

    Args:
        option: the option's name for messages (``--set``).
        key: the variable.
        raw: the text after ``=``.
        template: the variable's current (template) value, whose type says whether a bare word is text.

    Raises:
        OptionError: not valid JSON where JSON is needed, e.g. ``--set channels: not valid JSON: [16,32``.
    """
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    looks_json = raw.strip()[:1] in set('[{"0123456789-.') or raw.strip() in ("true", "false", "null")
    if isinstance(template, str) and not looks_json:
        return raw  # a bare word for a text variable: --set method=gin
    if template is None and not looks_json and raw.strip():
        return raw  # a variable of unknown type (checked by its own validation)
    hint = f" (it holds {type_name(template)}, e.g. {json.dumps(template)})" if template is not None else ""
    raise OptionError(f"{option} {key}: not valid JSON: {raw}{hint}")


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_type(where: str, value: Any, kind: str) -> Any:
    """Check a JSON value's type; returns it (ints are accepted where numbers are).

    Args:
        where: what names the value in a message (``--config run.json: batch_size``).
        kind: ``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``, ``int_list``, ``str_list``,
            ``float_list``, ``optional_float_list``.

    Raises:
        OptionError: naming ``where``, the expected type and the value found.
    """
    def bad(expected: str) -> OptionError:
        return OptionError(f"{where}: expected {expected}, got {json.dumps(value, default=str)} ({type_name(value)})")

    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_num = (is_int or isinstance(value, float)) and not isinstance(value, bool)
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not is_int:
            raise bad("an integer")
    elif kind == "float":
        if not is_num or not math.isfinite(value):
            raise bad("a finite number")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif kind == "str":
        if not isinstance(value, str):
            raise bad("text")
    elif kind == "dict":
        if not isinstance(value, dict):
            raise bad("an object {...}")
    elif kind in ("list", "int_list", "str_list", "float_list"):
        if not isinstance(value, (list, tuple)):
            raise bad("a list [...]")
        item = {"int_list": "int", "str_list": "str", "float_list": "float"}.get(kind)
        if item:
            return [check_type(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    elif kind == "optional_float_list":
        return None if value is None else check_type(where, value, "float_list")
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return value


def check_range(where: str, value: float, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`OptionError` when ``value`` is outside ``[low, high]`` (open ends with ``*_open``)."""
    if low is not None and (value < low or (low_open and value == low)):
        raise OptionError(f"{where}: must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise OptionError(f"{where}: must be {'<' if high_open else '<='} {high:g}, got {value:g}")


def set_item(text: str) -> tuple[str, str]:
    """argparse type of ``--set KEY=VALUE``: ``(key, raw text)``; the value is parsed against the variable later."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), raw


def kind_of(template: Any) -> str | None:
    """The ``check_type`` kind of a template value (None: no check)."""
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list",
            dict: "dict"}.get(type(template))


def set_values(items: list[tuple[str, str]] | None, known: dict[str, Any], option: str = "--set") -> dict[str, Any]:
    """``--set`` items -> checked values: known keys only, each given once, parsed as JSON (a bare word for text
    variables), of the type of its template value (a float variable takes an integer).

    Raises:
        OptionError: ``--set KEY: ...`` naming the key and the problem.
    """
    out: dict[str, Any] = {}
    for key, raw in items or []:
        if key not in known:
            raise OptionError(f"{option} {key}: unknown; settable: {', '.join(sorted(known))}")
        if key in out:
            raise OptionError(f"{option} {key}: given twice")
        template = known[key]
        value = parse_json_value(option, key, raw, template)
        kind = kind_of(template)
        if kind == "int" and isinstance(value, float) and not value.is_integer():
            kind = "float" if key in _FLOAT_OK else kind
        out[key] = check_type(f"{option} {key}", value, kind) if kind and template is not None else value
    return out


#: integer-valued template variables that also take fractional numbers (seconds)
_FLOAT_OK = {"wait_time_after_min_received"}

#: dataclass field annotation -> check_type kind
_ANNOTATION_KINDS = {"int": "int", "float": "float", "str": "str", "bool": "bool", "list[str]": "str_list",
                     "list[int]": "int_list", "list[float]": "float_list"}


def check_dataclass_values(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Values for a configuration dataclass (``fedgin experiment --set``): known fields, types from the field
    annotations, counts >= 0, ``rounds`` >= 1, ``size`` 1..MAX_SIZE_PX, ``spacing`` > 0."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise OptionError(f"{where} {key}: unknown; fields: {', '.join(sorted(fields))}")
        kind = _ANNOTATION_KINDS.get(str(fields[key].type))
        name = f"{where} {key}"
        if kind:
            value = check_type(name, value, kind)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if key == "rounds":
                    check_range(name, item, low=1)
                elif key == "size":
                    check_range(name, item, low=1, high=MAX_SIZE_PX)
                elif key == "spacing":
                    check_range(name, item, low=0, low_open=True)
                else:
                    check_range(name, item, low=0)
        out[key] = value
    return out
